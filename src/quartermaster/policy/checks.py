"""What upload (and `qm policy test`) refuses beyond what does not compile: policies regopy
would evaluate silently wrong, or that could never object (docs/policy.md, "What upload
refuses"). A stored policy is not checked again at evaluation: these checks are about what a
policy means, not what it may reach (the restricted built-ins are refused everywhere,
policy/engine.py).

- a call to a function that is neither the module's own nor a built-in regopy is known to
  implement as OPA does (policy/builtins.py): regopy makes such a call undefined, so the rule
  never fires (and a `not` of it always does), or fails at every evaluation;
- a `sprintf` whose literal format does not fit its literal arguments, or uses a verb regopy
  gets wrong: regopy makes such a call undefined instead of OPA's `%!d(…)`, so a deny whose
  message it builds never fires;
- a reference to `data.` outside the module's own package: each policy is evaluated alone;
- a module that defines none of the rule sets the engine reads;
- a module that fails evaluated on an empty input (a conflict between complete rules, a
  built-in failing on a constant), which would fail on every input.

The source is read with its strings and comments blanked (policy/engine.py `_code_only`), so a
name in a string or a comment is no call."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from quartermaster.errors import InvalidInputError
from quartermaster.policy.builtins import OPA_BUILTINS_NOT_SUPPORTED, SUPPORTED_BUILTINS
from quartermaster.policy.engine import (
    RULE_SETS,
    CompiledPolicy,
    PolicyCache,
    PolicyRuntimeError,
    _code_only,
    is_forbidden_builtin,
)

_NAME = r"[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*"
_CALL = re.compile(rf"(?<![\w.$])({_NAME})\s*\(")
_KEYWORDS = frozenset(
    {"if", "not", "some", "every", "in", "contains", "with", "as", "default", "else", "package"}
    | {"import", "true", "false", "null"}
)
_DATA_REF = re.compile(r"(?<![\w.$])data\s*(\.\s*[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*|\[)")
_RULE_HEAD = re.compile(r"^[ \t]*(?:default[ \t]+)?([A-Za-z_]\w*)\b", re.MULTILINE)
_VERB = re.compile(r"%(?:(%)|(\[\d+\])?([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*))?([A-Za-z]?))")
_INTEGER_VERBS = frozenset("dxXo")
_NUMBER_VERBS = frozenset("feEgG")
_FINE_VERBS = frozenset("svt") | _INTEGER_VERBS | _NUMBER_VERBS
_INTEGER_ARGUMENT = re.compile(r"^(?:-?\d+|count\s*\(.*\))$", re.DOTALL)
_INTEGER_RULE = re.compile(r"^[ \t]*([A-Za-z_]\w*)[ \t]*:?=[ \t]*-?\d+[ \t]*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    line: int
    open_at: int  # the index of its "("
    close_at: int  # the index of its ")" (len(code) when unclosed)


def _line(code: str, at: int) -> int:
    return code.count("\n", 0, at) + 1


def _depths(code: str) -> list[int]:
    """Bracket depth before each character of the blanked source."""
    depths = []
    depth = 0
    for char in code:
        depths.append(depth)
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
    return depths


def _closing(code: str, open_at: int) -> int:
    depth = 0
    for index in range(open_at, len(code)):
        if code[index] in "([{":
            depth += 1
        elif code[index] in ")]}":
            depth -= 1
            if depth == 0:
                return index
    return len(code)


def _calls(code: str) -> Iterator[tuple[_Call, bool]]:
    """Every `name(` in the blanked source, and whether it is a rule head (a function's
    definition: the first word of a line at bracket depth 0)."""
    depths = _depths(code)
    for match in _CALL.finditer(code):
        name = re.sub(r"\s+", "", match.group(1))
        if name in _KEYWORDS:
            continue
        start = match.start(1)
        line_start = code.rfind("\n", 0, start) + 1
        before = code[line_start:start].strip()
        head = depths[start] == 0 and before in ("", "default")
        open_at = match.end() - 1
        yield _Call(name, _line(code, start), open_at, _closing(code, open_at)), head


def _places(found: dict[str, list[int]]) -> str:
    return ", ".join(
        f"{name} (line{'s' if len(lines) > 1 else ''} {', '.join(map(str, sorted(set(lines))))})"
        for name, lines in sorted(found.items(), key=lambda item: (min(item[1]), item[0]))
    )


def refuse_unknown_calls(source: str, package: str) -> None:
    """Refuse calls to anything but the module's own functions and SUPPORTED_BUILTINS."""
    code = _code_only(source)
    calls = list(_calls(code))
    own = {call.name for call, head in calls if head}
    own_prefix = f"data.{package}."
    unsupported: dict[str, list[int]] = {}
    unknown: dict[str, list[int]] = {}
    for call, head in calls:
        name = call.name
        if head or name in own or is_forbidden_builtin(name) or name in SUPPORTED_BUILTINS:
            continue
        if name.startswith(own_prefix) and name.removeprefix(own_prefix) in own:
            continue
        if name.startswith(("data.", "input.")):
            continue  # another package's (refused below) or no function: the compiler's
        target = unsupported if name in OPA_BUILTINS_NOT_SUPPORTED else unknown
        target.setdefault(name, []).append(call.line)
    parts = []
    if unsupported:
        parts.append(
            "the policy calls a built-in regopy does not implement (or not as OPA does; its"
            f" result would be undefined, so the rule would never fire): {_places(unsupported)}"
        )
    if unknown:
        parts.append(
            "the policy calls a function that is neither defined in the policy nor a built-in"
            f" known to work in regopy: {_places(unknown)}"
        )
    if parts:
        raise InvalidInputError(
            "; ".join(parts) + " (docs/policy.md lists the built-ins policies may call)",
            field="source",
        )


def _arguments(source: str, code: str, call: _Call) -> list[str]:
    """The call's arguments as written (split at top-level commas of the blanked source)."""
    parts: list[str] = []
    depth = 0
    start = call.open_at + 1
    for index in range(call.open_at + 1, min(call.close_at, len(code))):
        char = code[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(source[start:index].strip())
            start = index + 1
    last = source[start : call.close_at].strip()
    if last or parts:
        parts.append(last)
    return parts


def _literal_string(text: str) -> str | None:
    if len(text) >= 2 and text[0] == text[-1] == "`":
        return text[1:-1]
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1].replace('\\"', ""):
        return text[1:-1]
    return None


def _array_items(text: str) -> list[str] | None:
    """The items of an array literal as written, or None if `text` is no array literal."""
    code = _code_only(text)
    if not (code.startswith("[") and code.endswith("]")) or _closing(code, 0) != len(code) - 1:
        return None
    items = _arguments(text, code, _Call("", 0, 0, len(code) - 1))
    return [item for item in items if item] if items != [""] else []


def sprintf_problems(source: str) -> list[str]:
    """What is wrong with each `sprintf` call whose format is a literal string."""
    code = _code_only(source)
    integers = set(_INTEGER_RULE.findall(code))  # `max_gpu := 2`
    problems: list[str] = []
    for call, head in _calls(code):
        if call.name != "sprintf" or head:
            continue
        arguments = _arguments(source, code, call)
        if len(arguments) != 2:
            continue  # the compiler says so
        fmt = _literal_string(arguments[0])
        if fmt is None:
            continue
        items = _array_items(arguments[1])
        verbs = [m for m in _VERB.finditer(fmt) if not m.group(1)]
        where = f"sprintf at line {call.line}"
        for verb in verbs:
            letter = verb.group(6)
            if verb.group(2) or "*" in (verb.group(4) or "") + (verb.group(5) or ""):
                problems.append(
                    f"{where}: {verb.group()} (an argument index or a * width) is not supported"
                    " by regopy"
                )
            elif letter == "q":
                problems.append(
                    f"{where}: regopy does not support %q (it is left in the text and takes no"
                    ' argument, so the next verb takes the wrong one): write "%s" or %v'
                )
            elif letter not in _FINE_VERBS:
                problems.append(
                    f"{where}: regopy does not support {verb.group() or '%'} (use %s for"
                    " strings, %v for anything else)"
                )
        if items is None:
            continue
        if len(items) != len(verbs):
            problems.append(
                f"{where} has {len(verbs)} verb{'s' if len(verbs) != 1 else ''} for"
                f" {len(items)} argument{'s' if len(items) != 1 else ''}: regopy makes such a"
                " call undefined, so a rule whose message it is never fires"
            )
            continue
        for verb, item in zip(verbs, items, strict=True):
            letter = verb.group(6)
            integer = _INTEGER_ARGUMENT.match(item) or item in integers
            if letter in _INTEGER_VERBS and not integer:
                problems.append(
                    f"{where}: %{letter} of {item} is undefined in regopy unless the value is an"
                    " integer (9.5, a string), so a rule whose message it is would never"
                    " fire: use %v"
                )
    return problems


def refuse_bad_sprintf(source: str) -> None:
    problems = sprintf_problems(source)
    if problems:
        raise InvalidInputError("; ".join(problems), field="source")


def data_references(source: str, package: str) -> dict[str, list[int]]:
    """References to `data` outside the module's own package, with their lines."""
    code = _code_only(source)
    found: dict[str, list[int]] = {}
    for match in _DATA_REF.finditer(code):
        path = re.sub(r"\s+", "", match.group(1))
        if path == "[":
            name = "data[…]"
        else:
            name = "data" + path
            if name == f"data.{package}" or name.startswith(f"data.{package}."):
                continue
        found.setdefault(name, []).append(_line(code, match.start()))
    return found


def refuse_other_data(source: str, package: str) -> None:
    found = data_references(source, package)
    if found:
        raise InvalidInputError(
            f"the policy reads data outside its own package ({_places(found)}): each policy is"
            " evaluated alone, and policies cannot share data, so this is always undefined;"
            " write the values it needs into this policy",
            field="source",
        )


def rule_names(source: str) -> set[str]:
    """The names of the rules the module defines (the first word of each top-level line)."""
    code = _code_only(source)
    depths = _depths(code)
    names = set()
    for match in _RULE_HEAD.finditer(code):
        if depths[match.start(1)] == 0 and match.group(1) not in ("package", "import"):
            names.add(match.group(1))
    return names


def refuse_no_rule_set(source: str) -> None:
    defined = rule_names(source)
    if not defined & set(RULE_SETS):
        shown = ", ".join(sorted(defined)) or "none"
        raise InvalidInputError(
            f"the policy defines none of the rule sets the server reads ({', '.join(RULE_SETS)}),"
            f" so it could never object; it defines: {shown}"
            + (" (a Gatekeeper `violation` is a `deny` here)" if "violation" in defined else ""),
            field="source",
        )


def static_checks(source: str, package: str) -> None:
    """Refuse what upload and `qm policy test` refuse short of evaluating (above); the source
    compiles (CompiledPolicy runs these after compiling it)."""
    refuse_unknown_calls(source, package)
    refuse_bad_sprintf(source)
    refuse_other_data(source, package)
    refuse_no_rule_set(source)


def trial_evaluation(source: str, *, name: str, tenant_id: str, cache: PolicyCache) -> None:
    """Evaluate a policy being uploaded once on an empty input, within the evaluation budget
    of `cache`'s sandbox (in-process without one: tests), and refuse it if that fails: what
    fails on no input at all (two values for a complete rule, a built-in failing on a constant,
    a loop over the budget) fails on every input, and an enforced one would reject every
    publish. It waits for a worker of `tenant_id`'s share, as its decisions do."""
    try:
        if cache.sandbox is None:
            CompiledPolicy(source, name=name, checked=False).evaluate({})
        else:
            digest = hashlib.sha256(source.encode()).hexdigest()
            cache.sandbox.evaluate(f"upload/{digest}", name, source, {}, tenant=tenant_id)
    except PolicyRuntimeError as exc:
        raise InvalidInputError(
            f"the policy fails when evaluated on an empty input, so it would fail on every"
            f" input: {exc}",
            field="source",
        ) from None
