"""The policy evaluation worker: a child process that evaluates policies for the server.

Run as `python -m quartermaster.policy.worker` by `policy/sandbox.py`, which starts it with
an empty environment (no database URL, no secrets to read) and kills it when an evaluation
goes over its time or memory budget. Requests and answers are one JSON document a line:

    {"policies": [{"key": "...", "name": "...", "source": "..."}], "input": {...}}
    {"results": [{"verdict": {"deny": [...], ...}} | {"error": "...", "invalid": false}]}

Compiled policies are kept by key, so a policy compiles once per worker."""

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

MAX_COMPILED = 512


def answer(request: dict[str, Any], compiled: dict[str, CompiledPolicy]) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    batch: InputBatch | None = None
    for policy in request["policies"]:
        try:
            found = compiled.get(policy["key"])
            if found is None:
                found = CompiledPolicy(policy["source"], name=policy["name"], checked=False)
                if len(compiled) >= MAX_COMPILED:
                    compiled.pop(next(iter(compiled)))
                compiled[policy["key"]] = found
            batch = batch or InputBatch(request["input"])
            verdict = batch.evaluate(found)
            results.append({"verdict": {name: getattr(verdict, name) for name in RULE_SETS}})
        except InvalidInputError as exc:
            results.append({"error": exc.message, "invalid": True})
        except PolicyRuntimeError as exc:
            results.append({"error": str(exc), "invalid": False})
    return {"results": results}


def serve(requests: TextIO, answers: TextIO) -> None:
    compiled: dict[str, CompiledPolicy] = {}
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
