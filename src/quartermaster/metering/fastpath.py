"""Fast acceptance checks compiled from the pydantic event models (pure).

Validating a plain dict with pydantic costs ~8 us per event here (the envelope plus its data),
more than everything else on the ingest path together. These checks answer one question
cheaply: "is this value certainly valid for the model?". They are derived from the models'
fields (types, constraints, nullability, required-ness, `extra`) so they follow the models
when those change; whatever they cannot decide - an unfamiliar type or constraint, lax
coercions such as "12" for an int, a model validator they do not know - answers False, and the
caller then asks pydantic, which stays the single authority on what is valid and on the error
message. So a check may send valid input to the slow path, but never accepts invalid input;
tests/metering/test_fastpath.py checks that property against pydantic with generated events.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo

from quartermaster.domain.currencies import OneOfCodes
from quartermaster.domain.events import JsonNumber, Rfc3339, is_bounded_instant

Check = Callable[[object], bool]
ModelCheck = Callable[[Mapping[str, object]], bool]
UNDECIDED = "False"

# RFC 3339 with an explicit offset, as CloudEvents requires; other spellings pydantic accepts
# take the slow path.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)
# A subset of `domain.events.DECIMAL_TEXT`, the spellings that need no exponent.
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9]\d{0,39})(?:\.\d{1,40})?", re.ASCII)


def fast_timestamp(value: object) -> datetime | None:
    """An aware datetime for an RFC 3339 string with an offset, else None (undecided)."""
    if type(value) is not str or _RFC3339.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def fast_instant(value: object) -> datetime | None:
    """`fast_timestamp`'s datetime when it names an instant from 1970 on (what
    `Rfc3339(bounded=True)` requires), else None (undecided)."""
    moment = fast_timestamp(value)
    return moment if moment is not None and is_bounded_instant(moment) else None


class _Constants:
    """Values the generated code refers to by name."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {
            "_fast_timestamp": fast_timestamp,
            "_fast_instant": fast_instant,
        }

    def add(self, value: object) -> str:
        name = f"_k{len(self.values)}"
        self.values[name] = value
        return name


def _flatten(extra: tuple[Any, ...], metadata: list[Any]) -> list[Any]:
    flat = list(metadata)
    for item in extra:
        if isinstance(item, FieldInfo):
            flat.extend(item.metadata)
        else:
            flat.append(item)
    return flat


def check_expression(annotation: Any, metadata: list[Any], consts: _Constants) -> str:
    """A Python expression over `v`, true only when `v` is certainly valid for the type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return check_expression(base, _flatten(tuple(extra), metadata), consts)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) != 1:
            return UNDECIDED
        inner = check_expression(options[0], metadata, consts)
        nullable = len(options) < len(get_args(annotation))
        return f"(v is None or {inner})" if nullable else inner
    if origin is Literal:
        allowed = get_args(annotation)
        if not all(type(a) is str for a in allowed):
            return UNDECIDED
        return f"(type(v) is str and v in {consts.add(frozenset(allowed))})"
    if origin is dict:
        key_type, value_type = get_args(annotation)
        if key_type is str and value_type is Any and not metadata:
            return "(type(v) is dict)"
        return UNDECIDED
    if annotation is str:
        return _string_expression(metadata, consts)
    if annotation is int or annotation is Decimal:
        return _number_expression(metadata, consts, allow_decimal=annotation is Decimal)
    if annotation is datetime and all(isinstance(m, Rfc3339) for m in metadata):
        # its pattern is a subset of Rfc3339's
        if any(m.bounded for m in metadata):
            return "(_fast_instant(v) is not None)"
        return "(_fast_timestamp(v) is not None)"
    if isinstance(annotation, type) and issubclass(annotation, Enum) and not metadata:
        values = frozenset(m.value for m in annotation)
        if all(type(v) is str for v in values):
            return f"(type(v) is str and v in {consts.add(values)})"
    return UNDECIDED


def _string_expression(metadata: list[Any], consts: _Constants) -> str:
    min_length, max_length, pattern = 0, None, None
    codes: frozenset[str] | None = None
    for item in metadata:
        if isinstance(item, StringConstraints):
            transforms = (item.strip_whitespace, item.to_upper, item.to_lower, item.strict)
            if any(t is not None for t in transforms) or item.ascii_only:
                return UNDECIDED
            if item.min_length is not None:
                min_length = max(min_length, item.min_length)
            if item.max_length is not None:
                max_length = item.max_length
            if item.pattern is not None:
                if pattern is not None or not isinstance(item.pattern, str):
                    return UNDECIDED
                pattern = item.pattern
        elif isinstance(item, annotated_types.MinLen):
            min_length = max(min_length, item.min_length)
        elif isinstance(item, annotated_types.MaxLen):
            max_length = item.max_length
        elif isinstance(item, OneOfCodes) and codes is None:
            codes = item.codes
        else:
            return UNDECIDED
    parts = ["type(v) is str"]
    if min_length > 0:
        parts.append(f"len(v) >= {int(min_length)}")
    if max_length is not None:
        parts.append(f"len(v) <= {int(max_length)}")
    if pattern is not None:
        # Python's `$` also matches before a trailing newline; pydantic's (Rust) regex does
        # not. Only a pattern anchored exactly as ^...$ with no other `$` becomes fullmatch.
        body = pattern.removeprefix("^").removesuffix("$")
        if not (pattern.startswith("^") and pattern.endswith("$")) or "$" in body:
            return UNDECIDED
        parts.append(f"{consts.add(re.compile(body).fullmatch)}(v) is not None")
    if codes is not None:
        parts.append(f"v in {consts.add(codes)}")
    return "(" + " and ".join(parts) + ")"


def _number_expression(metadata: list[Any], consts: _Constants, *, allow_decimal: bool) -> str:
    lower: Any = None
    upper: Any = None
    finite_only = False
    text_allowed = True
    for item in metadata:
        if isinstance(item, JsonNumber):
            # `type(v) is int`, a float or a `_PLAIN_DECIMAL` string: each passes it
            text_allowed = item.text
        elif isinstance(item, annotated_types.Ge):
            lower = item.ge
        elif isinstance(item, annotated_types.Le):
            upper = item.le
        elif allow_decimal and type(item).__name__ == "AllowInfNan" and not item.allow_inf_nan:
            finite_only = True
        else:
            return UNDECIDED
    if allow_decimal and not finite_only:
        return UNDECIDED  # NaN/inf semantics would need pydantic's own rules
    bounds = []
    if lower is not None:
        bounds.append(f"v >= {consts.add(lower)}")
    if upper is not None:
        bounds.append(f"v <= {consts.add(upper)}")
    as_int = " and ".join(["type(v) is int", *bounds])
    if not allow_decimal:
        return f"({as_int})"

    non_negative_suffices = lower is not None and lower <= 0 and upper is None

    def in_bounds(number: Any) -> bool:
        return (lower is None or number >= lower) and (upper is None or number <= upper)

    def other_number(v: object) -> bool:
        if type(v) is float:
            return math.isfinite(v) and in_bounds(v)
        if text_allowed and type(v) is str and _PLAIN_DECIMAL.fullmatch(v) is not None:
            if non_negative_suffices and v[0] != "-":
                return True  # a plain unsigned decimal is >= 0: no need to build a Decimal
            try:
                return in_bounds(Decimal(v))
            except InvalidOperation:
                return False
        return False

    return f"(({as_int}) or {consts.add(other_number)}(v))"


# Model validators the fast path knows, by validator name: the data must name at least one of
# these fields with a non-null value. Tests prove each listed field satisfies the model.
AtLeastOne = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TimesInOrder:
    """A known model validator: when both times are given, `later` is after `earlier`."""

    earlier: str
    later: str


KnownValidator = AtLeastOne | TimesInOrder


def compile_model(
    model: type[BaseModel],
    *,
    known_validators: Mapping[str, KnownValidator] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> ModelCheck | None:
    """A generated function telling whether a dict is certainly valid for `model`, or None
    when the model has validators this module cannot reproduce (then every value of that
    model takes the pydantic path). `overrides` replaces a field's check expression."""
    known = known_validators or {}
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        return None
    if decorators.field_serializers or decorators.computed_fields:
        return None
    if any(name not in known for name in decorators.model_validators):
        return None
    if any(f.alias not in (None, name) for name, f in model.model_fields.items()):
        return None
    consts = _Constants()
    missing = consts.add(object())
    lines = ["def check(data):"]
    if model.model_config.get("extra") == "forbid":
        allowed = consts.add(frozenset(model.model_fields))
        lines.append(f"    if not {allowed}.issuperset(data): return False")
    for name, field in model.model_fields.items():
        expression = (overrides or {}).get(name) or check_expression(
            field.annotation, list(field.metadata), consts
        )
        lines.append(f"    v = data.get({name!r}, {missing})")
        if field.is_required():
            lines.append(f"    if v is {missing} or not {expression}: return False")
        else:
            lines.append(f"    if v is not {missing} and not {expression}: return False")
    for validator in decorators.model_validators:
        rule = known[validator]
        if isinstance(rule, TimesInOrder):  # both fields passed their timestamp checks
            first, second = f"data.get({rule.earlier!r})", f"data.get({rule.later!r})"
            lines.append(
                f"    if {first} is not None and {second} is not None and not"
                f" _fast_timestamp({first}) < _fast_timestamp({second}): return False"
            )
        else:
            absent = " and ".join(f"data.get({n!r}) is None" for n in rule)
            lines.append(f"    if {absent}: return False")
    lines.append("    return True")
    namespace: dict[str, Any] = dict(consts.values)
    exec(compile("\n".join(lines), f"<fast check of {model.__name__}>", "exec"), namespace)
    check: ModelCheck = namespace["check"]
    return check
