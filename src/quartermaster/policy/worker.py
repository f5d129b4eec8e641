"""The policy evaluation worker: a child process that evaluates policies for the server.

Run as `python -m quartermaster.policy.worker` by `policy/sandbox.py`, which starts it with
an empty environment (no database URL, no secrets to read) and kills it when an evaluation
goes over its time or memory budget. Requests and answers are one JSON document a line:

    {"policies": [{"key": "...", "name": "...", "source": "..."}], "input": {...}}
    {"results": [{"verdict": {"deny": [...], ...}} | {"error": "...", "invalid": false}]}

    {"compile": [{"key": "...", "name": "...", "source": "..."}]}
    {"compiled": [null | "why it does not compile"]}

Compiled policies are kept by key (a source that does not compile too, with why), so a policy
compiles once per worker. The sandbox sends a policy this worker has not compiled yet in a
`compile` request first, within a budget of its own, so compiling is not charged to an
evaluation's time limit (a 128 KiB policy compiles for seconds)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from quartermaster.errors import InvalidInputError
from quartermaster.policy.engine import (
    RULE_SETS,
    CompiledPolicy,
    InputBatch,
    PolicyRuntimeError,
)

MAX_COMPILED = 512  # policy/sandbox.py mirrors which keys a worker holds: the same bound
Compiled = dict[str, CompiledPolicy | InvalidInputError]


def compiled_policy(policy: dict[str, Any], compiled: Compiled) -> CompiledPolicy:
    """The policy compiled, from the worker's keep or now (kept either way, the oldest going
    first past MAX_COMPILED). Raises InvalidInputError if it does not compile."""
    found = compiled.get(policy["key"])
    if found is None:
        try:
            found = CompiledPolicy(policy["source"], name=policy["name"], checked=False)
        except InvalidInputError as exc:
            found = exc
        if len(compiled) >= MAX_COMPILED:
            compiled.pop(next(iter(compiled)))
        compiled[policy["key"]] = found
    if isinstance(found, InvalidInputError):
        raise found
    return found


def answer(request: dict[str, Any], compiled: Compiled) -> dict[str, Any]:
    if "compile" in request:
        errors: list[str | None] = []
        for policy in request["compile"]:
            try:
                compiled_policy(policy, compiled)
                errors.append(None)
            except InvalidInputError as exc:
                errors.append(exc.message)
        return {"compiled": errors}
    results: list[dict[str, Any]] = []
    batch: InputBatch | None = None
    for policy in request["policies"]:
        try:
            found = compiled_policy(policy, compiled)
            batch = batch or InputBatch(request["input"])
            verdict = batch.evaluate(found)
            results.append({"verdict": {name: getattr(verdict, name) for name in RULE_SETS}})
        except InvalidInputError as exc:
            results.append({"error": exc.message, "invalid": True})
        except PolicyRuntimeError as exc:
            results.append({"error": str(exc), "invalid": False})
    return {"results": results}


def serve(requests: TextIO, answers: TextIO) -> None:
    compiled: Compiled = {}
    answers.write(json.dumps({"ready": True}) + "\n")  # imports done: evaluations are timed
    answers.flush()
    for line in requests:
        answers.write(json.dumps(answer(json.loads(line), compiled)) + "\n")
        answers.flush()


def main() -> None:
    # Answers go to a copy of stdout; fd 1 itself goes nowhere, so what a policy prints
    # (`print`, `trace`) cannot corrupt an answer.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
