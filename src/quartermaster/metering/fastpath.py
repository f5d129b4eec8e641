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

Check = Callable[[object], bool]

# RFC 3339 with an explicit offset, as CloudEvents requires; other spellings pydantic accepts
# take the slow path.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)
_PLAIN_DECIMAL = re.compile(r"-?\d{1,40}(?:\.\d{1,40})?")


def _undecided(_value: object) -> bool:
    return False


def fast_timestamp(value: object) -> datetime | None:
    """An aware datetime for an RFC 3339 string with an offset, else None (undecided)."""
    if type(value) is not str or _RFC3339.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _flatten(extra: tuple[Any, ...], metadata: list[Any]) -> list[Any]:
    flat = list(metadata)
    for item in extra:
        if isinstance(item, FieldInfo):
            flat.extend(item.metadata)
        else:
            flat.append(item)
    return flat


def compile_check(annotation: Any, metadata: list[Any]) -> Check:
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extra = get_args(annotation)
        return compile_check(base, _flatten(tuple(extra), metadata))
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) != 1:
            return _undecided
        inner = compile_check(options[0], metadata)
        nullable = len(options) < len(get_args(annotation))
        return (lambda v: v is None or inner(v)) if nullable else inner
    if origin is Literal:
        allowed = get_args(annotation)
        if not all(type(a) is str for a in allowed):
            return _undecided
        allowed_set = frozenset(allowed)
        return lambda v: type(v) is str and v in allowed_set
    if origin is dict:
        key_type, value_type = get_args(annotation)
        if key_type is str and value_type is Any and not metadata:
            return lambda v: type(v) is dict
        return _undecided
    if annotation is str:
        return _string_check(metadata)
    if annotation is int:
        return _number_check(metadata, allow_decimal=False)
    if annotation is Decimal:
        return _number_check(metadata, allow_decimal=True)
    if annotation is datetime and not metadata:
        return lambda v: fast_timestamp(v) is not None
    if isinstance(annotation, type) and issubclass(annotation, Enum) and not metadata:
        values = frozenset(m.value for m in annotation)
        if all(type(v) is str for v in values):
            return lambda v: type(v) is str and v in values
    return _undecided


def _string_check(metadata: list[Any]) -> Check:
    min_length, max_length, pattern = 0, None, None
    for item in metadata:
        if isinstance(item, StringConstraints):
            transforms = (item.strip_whitespace, item.to_upper, item.to_lower, item.strict)
            if any(t is not None for t in transforms) or item.ascii_only:
                return _undecided
            if item.min_length is not None:
                min_length = max(min_length, item.min_length)
            if item.max_length is not None:
                max_length = item.max_length
            if item.pattern is not None:
                if pattern is not None or not isinstance(item.pattern, str):
                    return _undecided
                pattern = item.pattern
        elif isinstance(item, annotated_types.MinLen):
            min_length = max(min_length, item.min_length)
        elif isinstance(item, annotated_types.MaxLen):
            max_length = item.max_length
        else:
            return _undecided
    # Python's `$` also matches before a trailing newline; pydantic's (Rust) regex does not.
    # Only a pattern anchored exactly as ^...$ with no `$` inside is translated to fullmatch.
    compiled = None
    if pattern is not None:
        body = pattern.removeprefix("^").removesuffix("$")
        if not (pattern.startswith("^") and pattern.endswith("$")) or "$" in body:
            return _undecided
        compiled = re.compile(body)

    def check(v: object) -> bool:
        if type(v) is not str:
            return False
        n = len(v)
        if n < min_length or (max_length is not None and n > max_length):
            return False
        return compiled is None or compiled.fullmatch(v) is not None

    return check


def _number_check(metadata: list[Any], *, allow_decimal: bool) -> Check:
    lower: int | float | Decimal | None = None
    upper: int | float | Decimal | None = None
    finite_only = False
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            lower = item.ge  # type: ignore[assignment]
        elif isinstance(item, annotated_types.Le):
            upper = item.le  # type: ignore[assignment]
        elif allow_decimal and type(item).__name__ == "AllowInfNan" and not item.allow_inf_nan:
            finite_only = True
        else:
            return _undecided
    if allow_decimal and not finite_only:
        return _undecided  # NaN/inf semantics would need pydantic's own rules

    def in_bounds(number: int | float | Decimal) -> bool:
        return (lower is None or number >= lower) and (upper is None or number <= upper)

    def check(v: object) -> bool:
        kind = type(v)
        if kind is int:
            return in_bounds(v)  # type: ignore[arg-type]
        if not allow_decimal:
            return False
        if kind is float:
            return math.isfinite(v) and in_bounds(v)  # type: ignore[arg-type]
        if isinstance(v, str) and _PLAIN_DECIMAL.fullmatch(v) is not None:
            try:
                return in_bounds(Decimal(v))
            except InvalidOperation:
                return False
        return False

    return check


# Model validators the fast path knows, by (model, validator name): the data must name at least
# one of these fields with a non-null value. Tests prove each listed field satisfies the model.
AtLeastOne = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelCheck:
    fields: Mapping[str, Check]
    required: frozenset[str]
    forbid_extra: bool
    at_least_one: tuple[AtLeastOne, ...]

    def __call__(self, data: Mapping[str, object]) -> bool:
        fields = self.fields
        for name, value in data.items():
            check = fields.get(name)
            if check is None:
                if self.forbid_extra:
                    return False
            elif not check(value):
                return False
        for name in self.required:
            if name not in data:
                return False
        return all(any(data.get(n) is not None for n in names) for names in self.at_least_one)


def compile_model(
    model: type[BaseModel],
    *,
    known_validators: Mapping[str, AtLeastOne] | None = None,
    overrides: Mapping[str, Check] | None = None,
) -> ModelCheck | None:
    """A fast check for `model`, or None when the model has validators this module cannot
    reproduce (every event of that model then takes the pydantic path)."""
    known = known_validators or {}
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        return None
    if decorators.field_serializers or decorators.computed_fields:
        return None
    if any(name not in known for name in decorators.model_validators):
        return None
    extra = model.model_config.get("extra")
    checks = {
        name: (overrides or {}).get(name) or compile_check(field.annotation, list(field.metadata))
        for name, field in model.model_fields.items()
        if field.alias is None or field.alias == name
    }
    if len(checks) != len(model.model_fields):
        return None
    return ModelCheck(
        fields=checks,
        required=frozenset(n for n, f in model.model_fields.items() if f.is_required()),
        forbid_extra=extra == "forbid",
        at_least_one=tuple(known[name] for name in decorators.model_validators),
    )
