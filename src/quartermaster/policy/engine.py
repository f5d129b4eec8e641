"""Rego evaluation in-process with regopy.

A policy is one Rego v1 module. Its package is queried as a whole and three rule sets are read:
`deny` (blocks), `require_approval` (holds for a reviewer), `quarantine` (puts the version in
quarantine with the message as reason) and `warn` (recorded only); each is a
set of messages, written `deny contains msg if { ... }` (regopy parses Rego v1; the old
`deny[msg] { ... }` form parses as an object rule, whose keys are read as the messages).

Compiling is the expensive part (an interpreter per call costs ~2 ms), so the evaluator keeps
one compiled bundle per policy version and reuses it. Setting the input is the next most
expensive step (~1-2 ms for a 1.2 KB publish input, several times a bundle's query), and
a bundle runs on any interpreter: a publish sets its input once on an `InputBatch` and queries
every policy's bundle there. An interpreter is not safe to share between threads, so a batch
belongs to one caller, and each compiled policy has a lock around queries of its bundle."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import regopy

from quartermaster.errors import InvalidInputError

PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)\s*$", re.MULTILINE)
RULE_SETS = ("deny", "require_approval", "quarantine", "warn")
_ERROR_MESSAGE = re.compile(r"\(errormsg \d+:([^\n]*?)\)\s*\n")
_ERROR_AT = re.compile(r"\(error \d+:[^|\n]*\|(\d+)\|(\d+)")
_AST_AT = re.compile(r"\d+:[^\s|()]+\.rego\|(\d+)\|(\d+)")  # 6:name.rego|offset|length
MAX_POLICY_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Verdict:
    deny: list[str] = field(default_factory=list)
    require_approval: list[str] = field(default_factory=list)
    quarantine: list[str] = field(default_factory=list)
    warn: list[str] = field(default_factory=list)

    @property
    def result(self) -> str:
        if self.quarantine:
            return "quarantine"
        if self.deny:
            return "deny"
        if self.require_approval:
            return "require_approval"
        return "allow"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def input_digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _line_col(source: str, offset: int) -> tuple[int, int]:
    before = source[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def describe_rego_error(error: regopy.RegoError, source: str) -> str:
    """regopy's error is an S-expression; turn it into `message (line L, column C)`."""
    text = str(error.args[0]) if error.args else str(error)
    messages = _ERROR_MESSAGE.findall(text)
    places = _ERROR_AT.findall(text)
    parts = []
    for index, message in enumerate(messages or [text.strip()]):
        if index < len(places):
            line, column = _line_col(source, int(places[index][0]))
            parts.append(f"{message.strip()} (line {line}, column {column})")
        else:
            parts.append(message.strip())
    return "; ".join(parts)


def describe_error_node(root: regopy.Node, source: str) -> str:
    """Why a query or a build failed, `code: message (line L, column C)`. Printed, regopy's
    failed output is just `<error>`: the reason is in its node (a failed bundle's too), an
    error sequence of error nodes, each with a message, the AST it failed at and a code
    (`eval_conflict_error`). regopy's `Node.value` reads scalars only, so the message and code
    are read with its own node accessor. A build error's AST names the module and offset
    (`t.rego|38|33`); a runtime error's has carried none so far (`rego-line 0:`). The same
    error repeats once per rule that hit it: each is said once."""
    parts: list[str] = []
    for index in range(len(root) if root.kind == regopy.NodeKind.ErrorSeq else 0):
        error = root.at(index)
        texts = {
            error.at(i).kind: regopy.rego_shared.rego_node_value(error.at(i)._impl).strip()
            for i in range(len(error))
            if error.at(i).kind in (regopy.NodeKind.ErrorMessage, regopy.NodeKind.ErrorCode)
        }
        message = texts.get(regopy.NodeKind.ErrorMessage) or "the policy failed"
        code = texts.get(regopy.NodeKind.ErrorCode)
        part = f"{code}: {message}" if code else message
        if (place := _AST_AT.search(error.json())) and source:
            line, column = _line_col(source, int(place[1]))
            part += f" (line {line}, column {column})"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts) or "regopy gave no reason"


def package_of(source: str) -> str:
    match = PACKAGE.search(source)
    if match is None:
        raise InvalidInputError("the policy has no 'package' declaration", field="source")
    return match.group(1)


class CompiledPolicy:
    """One policy module compiled once; `evaluate` is thread-safe."""

    def __init__(self, source: str, *, name: str = "policy") -> None:
        if len(source.encode()) > MAX_POLICY_BYTES:
            raise InvalidInputError(
                f"the policy is larger than {MAX_POLICY_BYTES} bytes", field="source"
            )
        self.package = package_of(source)
        self._source = source  # to place a runtime error, should regopy say where it was
        self._lock = threading.Lock()
        # The bundle is queried on other interpreters (InputBatch); its builder stays alive
        # beside it.
        self._builder = regopy.Interpreter()
        self._builder.log_level = regopy.LogLevel.NONE  # errors come back as exceptions
        try:
            self._builder.add_module(f"{name}.rego", source)
            self._bundle = self._builder.build(f"data.{self.package}")
        except regopy.RegoError as exc:
            raise InvalidInputError(
                f"policy does not compile: {describe_rego_error(exc, source)}", field="source"
            ) from None
        if not self._bundle.ok():
            reason = describe_error_node(self._bundle.node(), source)
            raise InvalidInputError(f"policy does not compile: {reason}", field="source")

    def evaluate(self, document: Any) -> Verdict:
        """One policy, one input (`qm policy test`); a publish uses `InputBatch`."""
        return InputBatch(document).evaluate(self)

    def query(self, interpreter: regopy.Interpreter) -> Verdict:
        """Query the bundle on `interpreter`, whose input is already set."""
        with self._lock:
            try:
                output = interpreter.query_bundle(self._bundle)
            except regopy.RegoError as exc:
                raise PolicyRuntimeError(describe_rego_error(exc, "")) from None
        if not output.ok():
            raise PolicyRuntimeError(describe_error_node(output.node(), self._source))
        values: dict[str, Any] = {}
        for result in output.results:
            for expression in result.expressions:
                if isinstance(expression, dict):
                    values.update(expression)
        return Verdict(**{name: _messages(values.get(name), name) for name in RULE_SETS})


class InputBatch:
    """One input document set once on an interpreter of its own, then any number of compiled
    policies evaluated against it. Not thread-safe: one batch per evaluation."""

    def __init__(self, document: Any) -> None:
        self._interpreter = regopy.Interpreter()
        self._interpreter.log_level = regopy.LogLevel.NONE
        # The JSON round trip gives plain values (dates, decimals as text, as in the digest);
        # an Input built from them sets ~4x faster than regopy parsing the JSON text.
        try:
            self._interpreter.set_input(regopy.Input(json.loads(canonical_json(document))))
        except regopy.RegoError as exc:
            raise PolicyRuntimeError(describe_rego_error(exc, "")) from None

    def evaluate(self, policy: CompiledPolicy) -> Verdict:
        return policy.query(self._interpreter)


class PolicyRuntimeError(Exception):
    """The policy compiled but failed on this input (e.g. an unsupported built-in)."""


def _messages(value: Any, rule: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return sorted(str(v) if not isinstance(v, str) else v for v in value)
    if isinstance(value, bool):  # `deny if { ... }`: a boolean rule
        return [f"{rule} (no message)"] if value else []
    if isinstance(value, dict):  # the old `deny[msg] { ... }` form, parsed as an object
        return sorted(str(k) for k, v in value.items() if v)
    return [str(value)]


class PolicyCache:
    """Compiled policies by (tenant, name, version); a new version is a new key, so nothing
    stale is ever served. Bounded: the oldest entries go first."""

    def __init__(self, *, max_entries: int = 512) -> None:
        self._entries: dict[tuple[str, str, int, str], CompiledPolicy] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, tenant_id: str, name: str, version: int, source: str) -> CompiledPolicy:
        key = (tenant_id, name, version, hashlib.sha256(source.encode()).hexdigest())
        with self._lock:
            compiled = self._entries.get(key)
        if compiled is not None:
            return compiled
        compiled = CompiledPolicy(source, name=name)
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = compiled
        return compiled
