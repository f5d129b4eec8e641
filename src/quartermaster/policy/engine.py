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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import regopy

from quartermaster.errors import InvalidInputError

if TYPE_CHECKING:
    from quartermaster.policy.sandbox import PolicySandbox

PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)\s*$", re.MULTILINE)
RULE_SETS = ("deny", "require_approval", "quarantine", "warn")
_ERROR_MESSAGE = re.compile(r"\(errormsg \d+:([^\n]*?)\)\s*\n")
_ERROR_AT = re.compile(r"\(error \d+:[^|\n]*\|(\d+)\|(\d+)")
_AST_AT = re.compile(r"\d+:[^\s|()]+\.rego\|(\d+)\|(\d+)")  # 6:name.rego|offset|length
MAX_POLICY_BYTES = 128 * 1024  # larger compiles for tens of seconds (docs/performance.md)
# Built-ins a policy may not call (docs/policy.md "Restricted built-ins"): they read the
# server's environment or the network, or make a decision depend on something other than its
# logged input (the clock, randomness). regopy has no switch to turn a built-in off, so a
# policy that calls one is refused when it is compiled.
FORBIDDEN_BUILTINS = frozenset(
    {
        "opa.runtime",  # the server's environment variables (database URL, secrets)
        "http.send",
        "net.lookup_ip_addr",
        "time.now_ns",  # a decision is reproducible from its input; pass times in the input
        "rand.intn",
        "uuid.rfc4122",
        "io.jwt.decode_verify",  # checks expiry against the clock unless given a time
        "crypto.x509.parse_and_verify_certificates",  # the clock, likewise
        "crypto.x509.parse_and_verify_certificates_with_options",
    }
)
FORBIDDEN_BUILTIN_PREFIXES = ("opa.", "http.", "net.lookup")  # should regopy add more of them


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


def _rego_spelled(value: Any) -> Any:
    """A plain value with every string (object keys too) as regopy keeps strings: the text of
    its JSON spelling without the quotes, non-ASCII as it is (`a\\"b`, `é`)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)[1:-1]
    if isinstance(value, dict):
        return {_rego_spelled(key): _rego_spelled(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rego_spelled(item) for item in value]
    return value


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
    if root.kind == regopy.NodeKind.Error:  # one error alone (an "ok" output's)
        errors = [root]
    elif root.kind == regopy.NodeKind.ErrorSeq:
        errors = [root.at(index) for index in range(len(root))]
    else:
        errors = []
    for error in errors:
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


def is_forbidden_builtin(name: str) -> bool:
    return name in FORBIDDEN_BUILTINS or name.startswith(FORBIDDEN_BUILTIN_PREFIXES)


_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')


def _code_only(source: str) -> str:
    """The source with its strings and comments blanked (newlines kept, so lines still count)."""
    return _STRING_OR_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), source)


def _referenced(source: str) -> list[tuple[str, int]]:
    """Restricted built-ins the source names outside strings and comments, called or not
    (`f := opa.runtime` then `f()` calls it without the plan saying so)."""
    code = _code_only(source)
    found: list[tuple[str, int]] = []
    names = [(name, "(?![\\w])") for name in sorted(FORBIDDEN_BUILTINS)]
    names += [(prefix.rstrip("."), r"\s*\.\s*[A-Za-z_]") for prefix in FORBIDDEN_BUILTIN_PREFIXES]
    for name, after in names:
        parts = [re.escape(part) for part in name.split(".")]
        pattern = r"(?<![\w.])" + r"\s*\.\s*".join(parts) + after
        for match in re.finditer(pattern, code):
            shown = name if after.startswith("(?!") else f"{name}.*"
            found.append((shown, code.count("\n", 0, match.start()) + 1))
    return found


def _line_of(source: str, text: str) -> int | None:
    at = source.find(text) if text else -1
    return source.count("\n", 0, at) + 1 if at >= 0 else None


def forbidden_calls(bundle: regopy.Bundle, source: str) -> list[tuple[str, int | None]]:
    """The restricted built-ins a compiled bundle calls, with the line of each call where it
    can be placed. Read from the bundle's plan, not the source text: however a call is spelled
    (`opa . runtime ( )`, across lines, in a function, as a `with` replacement) the plan names
    the built-in it calls. A call is a node whose first two children are the built-in's name
    and the call's text; any other leaf naming a restricted built-in (its declaration in the
    plan) is counted too, so nothing the plan calls is missed. The nodes are read in memory:
    regopy's `save_bundle` has aborted the process now and then."""
    shared = regopy.rego_shared
    calls: dict[tuple[str, int | None], None] = {}
    stack = [bundle.node()._impl]
    while stack:
        impl = stack.pop()
        children = [shared.rego_node_get(impl, i) for i in range(shared.rego_node_size(impl))]
        if children and shared.rego_node_size(children[0]) == 0:
            name = str(shared.rego_node_value(children[0]))
            if is_forbidden_builtin(name):
                where = children[1] if len(children) > 1 else None
                text = "" if where is None or shared.rego_node_size(where) else where
                line = _line_of(source, str(shared.rego_node_value(text)) if text else "")
                calls[(name, line)] = None
        stack.extend(children)
    for name in {name for name, line in calls if line is None}:
        if any(seen == name and line is not None for seen, line in calls):
            del calls[(name, None)]
    return sorted(calls, key=lambda item: (item[1] or 0, item[0]))


def _refuse_forbidden_builtins(bundle: regopy.Bundle, source: str) -> None:
    try:
        calls = forbidden_calls(bundle, source)
    except regopy.RegoError as exc:  # fail closed
        raise InvalidInputError(
            f"the policy's built-ins could not be checked ({describe_rego_error(exc, '')});"
            " it is refused",
            field="source",
        ) from None
    lines: dict[str, int | None] = {}
    for name, line in [*calls, *_referenced(source)]:
        family = name.removesuffix("*")
        if name.endswith("*") and any(seen.startswith(family) for seen in lines):
            continue  # `opa.*` where `opa.runtime` is already named
        known = lines.get(name)
        lines[name] = line if known is None else min(known, line or known)
    if lines:
        ordered = sorted(lines.items(), key=lambda item: (item[1] or 0, item[0]))
        places = [f"{name} (line {line})" if line else name for name, line in ordered]
        raise InvalidInputError(
            "the policy calls a built-in that policies may not use: "
            + ", ".join(places)
            + "; policies cannot read the server's environment, the network, the clock or"
            " randomness (pass what a rule needs in its input)",
            field="source",
        )


def strip_bom(source: str) -> str:
    """The source without the byte order mark Windows editors put first (U+FEFF)."""
    return source.removeprefix("\ufeff")


def package_of(source: str) -> str:
    match = PACKAGE.search(strip_bom(source))
    if match is None:
        raise InvalidInputError("the policy has no 'package' declaration", field="source")
    return match.group(1)


class CompiledPolicy:
    """One policy module compiled once; `evaluate` is thread-safe. `checked` (upload, `qm
    policy test`) also refuses what policy/checks.py refuses; a stored policy is compiled
    unchecked (the restricted built-ins are refused either way)."""

    def __init__(self, source: str, *, name: str = "policy", checked: bool = True) -> None:
        source = strip_bom(source)
        if len(source.encode()) > MAX_POLICY_BYTES:
            raise InvalidInputError(
                f"the policy is larger than {MAX_POLICY_BYTES} bytes (128 KiB): a larger one"
                " compiles for tens of seconds; split it into several policies",
                field="source",
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
        _refuse_forbidden_builtins(self._bundle, source)
        if checked:
            from quartermaster.policy.checks import static_checks  # it imports this module

            static_checks(source, self.package)

    def evaluate(self, document: Any) -> Verdict:
        """One policy, one input (`qm policy test`); a publish uses `InputBatch`."""
        return InputBatch(document).evaluate(self)

    def query(self, interpreter: regopy.Interpreter) -> Verdict:
        """Query the bundle on `interpreter`, whose input is already set."""
        values = self.values(interpreter)
        return Verdict(**{name: _messages(values.get(name), name) for name in RULE_SETS})

    def values(self, interpreter: regopy.Interpreter) -> dict[str, Any]:
        """The package's rules by name, on `interpreter`, whose input is set. The result is read
        from regopy's output nodes, not its JSON text: regopy 1.5 writes a string that
        `sprintf` made from a computed string (`lower(x)`, `concat(…)`) with that string's
        quotes inside it (`"team "abc""`), which is no JSON (docs/policy.md, "Strings")."""
        shared = regopy.rego_shared
        with self._lock:
            try:
                impl = shared.rego_bundle_query(interpreter._impl, self._bundle._impl)
            except regopy.RegoError as exc:
                raise PolicyRuntimeError(describe_rego_error(exc, "")) from None
            try:
                root = regopy.Node(shared.rego_output_node(impl))
                if root.kind in (regopy.NodeKind.ErrorSeq, regopy.NodeKind.Error):
                    # regopy says "ok" to some errors (a rule that reads all of `data`).
                    raise PolicyRuntimeError(self._error_reason(root))
                return _result_values(root._impl)
            finally:
                shared.rego_free_output(impl)

    def _error_reason(self, root: regopy.Node) -> str:
        reason = describe_error_node(root, self._source)
        if "Recursion detected" in reason:
            reason += (
                " (a rule that reads all of `data` or its own package reads itself; read"
                " `input` or name the rules it needs)"
            )
        return reason


class InputBatch:
    """One input document set once on an interpreter of its own, then any number of compiled
    policies evaluated against it. Not thread-safe: one batch per evaluation."""

    def __init__(self, document: Any) -> None:
        self._interpreter = regopy.Interpreter()
        self._interpreter.log_level = regopy.LogLevel.NONE
        # The JSON round trip gives plain values (dates, decimals as text, as in the digest).
        # regopy keeps a string as the text of its JSON spelling (a policy's `"a\\"b"` as
        # `a\\"b`) but takes an Input's strings as they are: each string is given spelled so
        # (`_rego_spelled`), or an input string with a quote, a backslash or a newline would
        # neither equal the policy's literal nor read back. Setting an Input is ~4x faster than
        # regopy parsing JSON text (docs/performance.md).
        try:
            plain = json.loads(canonical_json(document))
            self._interpreter.set_input(regopy.Input(_rego_spelled(plain)))
        except regopy.RegoError as exc:
            raise PolicyRuntimeError(describe_rego_error(exc, "")) from None

    @property
    def interpreter(self) -> regopy.Interpreter:
        return self._interpreter

    def evaluate(self, policy: CompiledPolicy) -> Verdict:
        return policy.query(self._interpreter)


def evaluate_rule(rules: str, name: str, document: Any = None) -> Any:
    """The value of rule `name` among `rules` (Rego v1, no package line) on `document`, or
    None when undefined: for probing regopy (tests/policy/builtin_probes.py)."""
    policy = CompiledPolicy(f"package probe\nimport rego.v1\n{rules}\n", checked=False)
    return policy.values(InputBatch({} if document is None else document).interpreter).get(name)


class PolicyRuntimeError(Exception):
    """The policy compiled but failed on this input (e.g. an unsupported built-in)."""


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


_SCALARS: dict[regopy.NodeKind, Any] = {
    regopy.NodeKind.Int: _number,
    regopy.NodeKind.Float: float,
    regopy.NodeKind.Boolean: lambda text: text.lower() == "true",  # a computed one is "True"
    regopy.NodeKind.Null: lambda text: None,
}
_STRING_PART = re.compile(r'\\(u[0-9a-fA-F]{4}|.)|"', re.DOTALL)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def rego_string(text: str) -> str:
    """A string node's value as the string it stands for. regopy keeps a string as the text of
    its JSON form without the outer quotes (`a \\"b\\"`, escapes and all, as the policy or
    the input JSON spelled it), except that `sprintf` puts a computed string in with its quotes
    (`team "abc"` for `sprintf("team %s", [lower("ABC")])`): a quote that is not escaped can
    only be such a one, and is dropped (OPA gives `team abc`). An escape that is no JSON escape
    (`upper` makes `\\n` into `\\N`) is kept as it is."""

    def part(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape is None:
            return ""  # a bare quote
        if len(escape) == 5:
            return chr(int(escape[1:], 16))
        return _ESCAPES.get(escape, match.group())

    decoded = _STRING_PART.sub(part, text)
    # \\uD83D\\uDE00 (a character outside the BMP) decodes to two surrogates: join them.
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _node_value(impl: Any) -> Any:
    """One output node as a Python value (a set as a list; an object key that is no string as
    its canonical JSON)."""
    shared = regopy.rego_shared
    kind = shared.rego_node_type(impl)
    size = shared.rego_node_size(impl)
    if kind in (regopy.NodeKind.Term, regopy.NodeKind.Scalar):
        return _node_value(shared.rego_node_get(impl, 0)) if size else None
    if kind == regopy.NodeKind.String:
        return rego_string(str(shared.rego_node_value(impl)))
    if kind in _SCALARS:
        return _SCALARS[kind](str(shared.rego_node_value(impl)))
    children = [shared.rego_node_get(impl, index) for index in range(size)]
    if kind == regopy.NodeKind.Object:
        items = {}
        for item in children:
            key = _node_value(shared.rego_node_get(item, 0))
            value = _node_value(shared.rego_node_get(item, 1))
            items[key if isinstance(key, str) else canonical_json(key)] = value
        return items
    if kind in (regopy.NodeKind.Array, regopy.NodeKind.Set):
        return [_node_value(child) for child in children]
    return None  # undefined


def _result_values(root: Any) -> dict[str, Any]:
    """The package's rules by name, read from an output's node tree: results, each with its
    terms (the query's expressions; one, the package object) and bindings."""
    shared = regopy.rego_shared
    values: dict[str, Any] = {}
    if shared.rego_node_type(root) != regopy.NodeKind.Results:
        return values  # undefined: no rule has a value
    for index in range(shared.rego_node_size(root)):
        result = shared.rego_node_get(root, index)
        for part in range(shared.rego_node_size(result)):
            terms = shared.rego_node_get(result, part)
            if shared.rego_node_type(terms) != regopy.NodeKind.Terms:
                continue
            for term in range(shared.rego_node_size(terms)):
                expression = _node_value(shared.rego_node_get(terms, term))
                if isinstance(expression, dict):
                    values.update(expression)
    return values


def _message(value: Any, rule: str) -> str:
    """One element of a rule set as the message shown: a string as it is; a Gatekeeper-style
    object its `msg` (`{"msg": m, "details": {…}}`); any other object or array as JSON."""
    if isinstance(value, dict) and isinstance(value.get("msg"), str):
        value = value["msg"]
    elif isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "), ensure_ascii=False)
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else f"{rule} (empty message)"


def _messages(value: Any, rule: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return sorted(_message(v, rule) for v in value)
    if isinstance(value, bool):  # `deny if { ... }`: a boolean rule
        return [f"{rule} (no message)"] if value else []
    if isinstance(value, dict):  # the old `deny[msg] { ... }` form, parsed as an object
        return sorted(str(k) for k, v in value.items() if v)
    return [str(value)]


class PolicyCache:
    """Compiled policies by (tenant, name, version); a new version is a new key, so nothing
    stale is ever served. Bounded: the oldest entries go first."""

    def __init__(self, *, max_entries: int = 512, sandbox: PolicySandbox | None = None) -> None:
        self._entries: dict[tuple[str, str, int, str], CompiledPolicy] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        # The server's cache evaluates in worker processes within a budget (policy/sandbox.py);
        # without one (tests of the engine) evaluation is in-process and unbounded.
        self.sandbox = sandbox

    def close(self) -> None:
        """Stop the sandbox's idle worker processes; the runtime closes its cache."""
        if self.sandbox is not None:
            self.sandbox.close()

    def get(self, tenant_id: str, name: str, version: int, source: str) -> CompiledPolicy:
        """A stored policy compiled; one that no longer compiles (e.g. it calls a built-in
        policies may no longer use) fails like a policy failing at runtime."""
        key = (tenant_id, name, version, hashlib.sha256(source.encode()).hexdigest())
        with self._lock:
            compiled = self._entries.get(key)
        if compiled is not None:
            return compiled
        try:
            compiled = CompiledPolicy(source, name=name, checked=False)
        except InvalidInputError as exc:
            raise PolicyRuntimeError(f"the stored policy is refused: {exc.message}") from None
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = compiled
        return compiled

    def evaluate(
        self, tenant_id: str, name: str, version: int, source: str, document: Any
    ) -> Verdict:
        """A stored policy on one input: in the sandbox if there is one (within its budget),
        else in-process. Raises PolicyRuntimeError (PolicyBudgetError over the budget)."""
        if self.sandbox is None:
            return self.get(tenant_id, name, version, source).evaluate(document)
        digest = hashlib.sha256(source.encode()).hexdigest()
        try:
            key = f"{tenant_id}/{name}/{version}/{digest}"
            return self.sandbox.evaluate(key, name, source, document, tenant=tenant_id)
        except InvalidInputError as exc:
            raise PolicyRuntimeError(f"the stored policy is refused: {exc.message}") from None

    def evaluate_many(
        self, tenant_id: str, policies: Sequence[tuple[str, int, str]], document: Any
    ) -> list[Verdict | PolicyRuntimeError]:
        """Stored policies (name, version, source) on one input: each one's verdict or the
        error it failed with, in order. In the sandbox, one request sets the input once for
        all of them (PolicySandbox.evaluate_many); in-process, one InputBatch."""
        if self.sandbox is None:
            batch = InputBatch(document)
            outcomes: list[Verdict | PolicyRuntimeError] = []
            for name, version, source in policies:
                try:
                    outcomes.append(batch.evaluate(self.get(tenant_id, name, version, source)))
                except PolicyRuntimeError as exc:
                    outcomes.append(exc)
            return outcomes
        keyed = [
            (
                f"{tenant_id}/{name}/{version}/{hashlib.sha256(source.encode()).hexdigest()}",
                name,
                source,
            )
            for name, version, source in policies
        ]
        return [
            PolicyRuntimeError(f"the stored policy is refused: {outcome.message}")
            if isinstance(outcome, InvalidInputError)
            else outcome
            for outcome in self.sandbox.evaluate_many(keyed, document, tenant=tenant_id)
        ]
