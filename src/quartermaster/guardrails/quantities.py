"""Kubernetes resource quantities as integers in base units. Pure.

cpu -> millicores ("500m" = 500, "2" = 2000); memory -> bytes ("1Gi", "512Mi", "1G", "1e3");
gpu, concurrency, jobs -> whole counts; runtime -> seconds ("90", "15m", "2h").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from quartermaster.errors import InvalidInputError

RESOURCES = ("concurrency", "cpu", "memory", "gpu", "jobs")
LIMIT_RESOURCES = ("concurrency", "cpu", "memory", "gpu", "runtime")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NUMBER = re.compile(r"^([0-9]+(?:\.[0-9]+)?(?:[eE][0-9]+)?)([A-Za-z]*)$")
# Quotas add amounts in SQL (`used + n <= hard`, BIGINT): two amounts under 2**62 cannot
# overflow the sum. A reservation expires `runtime` after it starts, so runtime stays far
# from datetime's year 9999 (and timedelta's limit).
MAX_AMOUNT = 2**62 - 1
MAX_RUNTIME_SECONDS = 100 * 366 * 86400


# A runtime is a duration: "500m" would be 500 minutes, so its examples are its own.
RUNTIME_EXAMPLES = "e.g. 90, 15m, 2h: seconds, or with s, m, h or d"


def _split(text: str, field: str, *, examples: str = "e.g. 500m, 2, 1Gi") -> tuple[Decimal, str]:
    match = _NUMBER.match(text.strip())
    if not match:
        raise InvalidInputError(f"{field} {text!r} is not a quantity ({examples})", field=field)
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise InvalidInputError(f"{field} {text!r} is not a number", field=field) from None
    # Before any unit factor multiplies it: a huge exponent would overflow Decimal's context.
    _bounded(number, text, field, MAX_AMOUNT, "base units")
    return number, match.group(2)


def _bounded(value: Decimal, text: str, field: str, most: int, unit: str) -> None:
    if value > most:
        raise InvalidInputError(
            f"{field} {text!r} is more than the largest accepted ({most:,} {unit})",
            field=field,
        )


def _whole(
    value: Decimal, text: str, field: str, *, most: int = MAX_AMOUNT, unit: str = "base units"
) -> int:
    _bounded(value, text, field, most, unit)
    if value != value.to_integral_value():
        raise InvalidInputError(f"{field} {text!r} is finer than the unit allows", field=field)
    return int(value)


def parse_quantity(resource: str, value: str | int | float, *, field: str | None = None) -> int:
    """`value` of `resource` in base units; raises naming the field and why."""
    name = field or resource
    text = str(value)
    examples = RUNTIME_EXAMPLES if resource == "runtime" else "e.g. 500m, 2, 1Gi"
    number, suffix = _split(text, name, examples=examples)
    if resource == "cpu":
        if suffix == "m":
            return _whole(number, text, name)
        if suffix:
            raise InvalidInputError(f"{name} {text!r}: cpu takes no suffix but m", field=name)
        return _whole(number * 1000, text, name)
    if resource == "memory":
        factor = _BINARY.get(suffix) or _DECIMAL.get(suffix) or (1 if not suffix else None)
        if factor is None:
            raise InvalidInputError(
                f"{name} {text!r}: unknown memory suffix {suffix!r} (Ki Mi Gi Ti, k M G T)",
                field=name,
            )
        return _whole(number * factor, text, name)
    if resource == "runtime":
        factor = _DURATION.get(suffix or "s")
        if factor is None:
            raise InvalidInputError(f"{name} {text!r}: use s, m, h or d", field=name)
        seconds = _whole(number * factor, text, name, most=MAX_RUNTIME_SECONDS, unit="seconds")
        if seconds < 1:
            raise InvalidInputError(
                f"{name} {text!r} is under 1 second: give how long the work may run "
                f"({RUNTIME_EXAMPLES}); its quota is held until then",
                field=name,
            )
        return seconds
    if resource in ("gpu", "concurrency", "jobs"):
        if suffix:
            raise InvalidInputError(f"{name} {text!r} must be a whole count", field=name)
        return _whole(number, text, name)
    raise InvalidInputError(f"unknown resource {resource!r}", field=name)


def format_quantity(resource: str, value: int) -> str:
    """Base units back to a readable quantity (exact)."""
    if resource == "cpu":
        return str(value // 1000) if value % 1000 == 0 else f"{value}m"
    if resource == "memory":
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            if value and value % _BINARY[suffix] == 0:
                return f"{value // _BINARY[suffix]}{suffix}"
        return str(value)
    if resource == "runtime":
        return f"{value}s"
    return str(value)
