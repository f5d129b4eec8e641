"""Parse a price book from YAML or JSON text, with errors that name the path of each bad field.

Numbers are read as exact decimals (YAML and JSON floats never pass through binary floats).
The stored form is JSON with numbers in plain digits as written (stored_json); the content
hash is of a canonical JSON text whose numbers are also normalized (canonical_json), so that
the same document always has the same content hash however its numbers are spelled.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

import yaml
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from quartermaster.domain.currencies import ACTIVE_CURRENCY, CURRENCY_CODE, is_active_currency
from quartermaster.domain.yaml_documents import StringTimestampLoader
from quartermaster.errors import InvalidInputError, UnsupportedMediaTypeError
from quartermaster.pricing.document import (
    METHOD_TAGS,
    MODEL_TAGS,
    NORMALIZED_NUMBERS,
    OVERAGE_MODEL_TAGS,
    AnyPolicy,
    AnyRule,
    Discount,
    Issue,
    PlatformCostPolicy,
    PriceBookDocument,
    PriceRule,
    Reservation,
    section_issues,
    semantic_issues,
)

DocumentFormat = Literal["yaml", "json"]
MAX_ISSUES_IN_MESSAGE = 20
_TAGS = frozenset(MODEL_TAGS + METHOD_TAGS)
_TAGS_BY_DISCRIMINATOR = {"model": MODEL_TAGS, "method": METHOD_TAGS}
DOCUMENT_PATH = "(document)"
_T = TypeVar("_T")


class PriceBookError(InvalidInputError):
    """A price book that does not load; `issues` holds every (path, message) found, `note`
    what helps to fix them (e.g. the names the tenant does have)."""

    def __init__(self, issues: list[Issue], *, note: str | None = None) -> None:
        shown = issues[:MAX_ISSUES_IN_MESSAGE]
        text = "; ".join(f"{path}: {message}" for path, message in shown)
        if len(issues) > len(shown):
            text += f"; … and {len(issues) - len(shown)} more"
        if note:
            text += f". {note}"
        super().__init__(f"invalid price book: {text}", field=issues[0][0] if issues else None)
        self.issues = issues
        self.note = note


class _DecimalSafeLoader(StringTimestampLoader):
    """Reads YAML floats as exact Decimals; timestamps stay strings, so an unquoted
    `effective_from: 2026-02-30` gets the same issue naming the field as a quoted one."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node)).replace("_", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        # .inf / .nan: let the schema refuse them with the field's path.
        return loader.construct_yaml_float(node)
    return value if value.is_finite() else loader.construct_yaml_float(node)


_DecimalSafeLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def format_for_content_type(content_type: str | None) -> DocumentFormat:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
        return "yaml"
    if media in ("application/json", ""):
        return "json"
    raise UnsupportedMediaTypeError(
        f"unsupported Content-Type {media!r}: send application/json or application/yaml",
        field="Content-Type",
    )


def guess_format(filename: str, text: str) -> DocumentFormat:
    if filename.lower().endswith(".json"):
        return "json"
    if filename.lower().endswith((".yaml", ".yml")):
        return "yaml"
    return "json" if text.lstrip().startswith("{") else "yaml"


def parse_raw(text: str, fmt: DocumentFormat) -> Any:
    """Text to plain data; a syntax error names its line and column."""
    if fmt == "json":
        try:
            return json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise PriceBookError(
                [
                    (
                        DOCUMENT_PATH,
                        f"not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}",
                    )
                ]
            ) from None
    try:
        return yaml.load(text, Loader=_DecimalSafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise PriceBookError([(DOCUMENT_PATH, f"not valid YAML: {where}{exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise PriceBookError([(DOCUMENT_PATH, f"not valid YAML: {exc}")]) from None
    except (ValueError, TypeError) as exc:  # a constructor's refusal, e.g. an explicit !!timestamp
        raise PriceBookError([(DOCUMENT_PATH, f"not valid YAML: {exc}")]) from None


def format_location(loc: tuple[int | str, ...]) -> str:
    """('prices', 3, 'graduated', 'tiers', 1, 'up_to') -> 'prices[3].tiers[1].up_to'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _TAGS:
            continue  # the discriminator's value, not a field of the document
        else:
            path += f".{part}" if path else str(part)
    return path or DOCUMENT_PATH


def _expected_tags(ctx: dict[str, Any], field: str, path: str) -> str:
    """The values the discriminator allows here: a subscription's overage takes the four
    usage models, not a subscription."""
    if ctx.get("expected_tags"):
        return ", ".join(tag.strip().strip("'\"") for tag in str(ctx["expected_tags"]).split(","))
    if field == "model" and path.endswith(".overage"):
        return ", ".join(OVERAGE_MODEL_TAGS)
    return ", ".join(_TAGS_BY_DISCRIMINATOR.get(field, ()))


def _issue_from(error: ErrorDetails) -> Issue:
    path = format_location(tuple(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "")).strip("'\"")
        expected = _expected_tags(ctx, field, path)
        path = f"{path}.{field}" if path != DOCUMENT_PATH else field
        if kind == "union_tag_not_found":
            return path, f"required (one of {expected})"
        return path, f"{ctx.get('tag')!r} is not one of {expected}"
    if kind == "extra_forbidden":
        return path, "unknown field"
    if kind == "missing":
        return path, "required"
    if kind == "model_type":
        return path, "must be a mapping of fields"
    message = str(error["msg"])
    return path, message[:1].lower() + message[1:]


_PRICE_RULE: TypeAdapter[AnyRule] = TypeAdapter(PriceRule)
_DISCOUNT: TypeAdapter[Discount] = TypeAdapter(Discount)
_POLICY: TypeAdapter[AnyPolicy] = TypeAdapter(PlatformCostPolicy)
_RESERVATION: TypeAdapter[Reservation] = TypeAdapter(Reservation)
_FIELD_ORDER = {name: position for position, name in enumerate(PriceBookDocument.model_fields)}
_INDEX = re.compile(r"\[(\d+)\]")


def _valid_items(data: dict[str, Any], key: str, adapter: TypeAdapter[_T]) -> list[tuple[int, _T]]:
    """The items of a section that are valid on their own, with their index."""
    items = data.get(key)
    if not isinstance(items, list):
        return []
    valid: list[tuple[int, _T]] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, adapter.validate_python(item)))
        except ValidationError:
            continue
    return valid


def _issues_of_valid_parts(data: dict[str, Any]) -> list[Issue]:
    """The rules between fields (tier order, one owner per scope, a reservation's meter
    priced, duplicates) over the parts of an invalid document that are valid on their own,
    so that they are reported with the bad fields rather than after those are fixed."""
    prices = data.get("prices")
    priced = (
        {
            item["meter"]
            for item in prices
            if isinstance(item, dict) and isinstance(item.get("meter"), str)
        }
        if isinstance(prices, list)
        else None
    )
    return section_issues(
        prices=_valid_items(data, "prices", _PRICE_RULE),
        discounts=_valid_items(data, "discounts", _DISCOUNT),
        platform_costs=_valid_items(data, "platform_costs", _POLICY),
        reservations=_valid_items(data, "reservations", _RESERVATION),
        priced=priced,
    )


def in_document_order(issues: list[Issue]) -> list[Issue]:
    """Issues sorted by where their path is in the document: the top-level fields in the
    schema's order, then item indexes (issues of one place keep their order)."""

    def key(issue: Issue) -> tuple[int, tuple[int, ...]]:
        path = issue[0]
        top = re.split(r"[.\[]", path, maxsplit=1)[0]
        position = -1 if path == DOCUMENT_PATH else _FIELD_ORDER.get(top, len(_FIELD_ORDER))
        return position, tuple(int(index) for index in _INDEX.findall(path))

    return sorted(issues, key=key)


def check_document(data: Any) -> tuple[PriceBookDocument | None, list[Issue]]:
    """Plain data to a document (None when it has issues) and every issue found: each bad
    field, and the rules between fields wherever the fields they need are valid."""
    if not isinstance(data, dict):
        got = "nothing" if data is None else type(data).__name__
        return None, [(DOCUMENT_PATH, f"must be a mapping of fields, got {got}")]
    try:
        document = PriceBookDocument.model_validate(data)
    except ValidationError as exc:
        issues = [_issue_from(error) for error in exc.errors()]
        return None, in_document_order(issues + _issues_of_valid_parts(data))
    issues = in_document_order(semantic_issues(document))
    return (None, issues) if issues else (document, [])


def check_new_document(data: Any) -> tuple[PriceBookDocument | None, list[Issue]]:
    """`check_document` for a document to store, which also needs an active ISO 4217
    currency: platform costs in any other are refused at ingest, so a book in one could never
    price them. Stored versions are read back without it (one may predate the check)."""
    document, issues = check_document(data)
    currency = data.get("currency") if isinstance(data, dict) else None
    if (
        isinstance(currency, str)
        and CURRENCY_CODE.match(currency)  # another shape is the schema's error
        and not is_active_currency(currency)
    ):
        issues = in_document_order(
            [*issues, ("currency", f"{currency!r} is not {ACTIVE_CURRENCY.what}")]
        )
        document = None
    return document, issues


def validate_document(data: Any) -> PriceBookDocument:
    """Plain data to a document, or PriceBookError listing every bad field with its path."""
    document, issues = check_document(data)
    if document is None:
        raise PriceBookError(issues)
    return document


def decode(text: str | bytes) -> str:
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            raise PriceBookError([(DOCUMENT_PATH, "not UTF-8 text")]) from None
    return text


def parse_price_book(text: str | bytes, fmt: DocumentFormat) -> PriceBookDocument:
    """A document to store, from its text (PriceBookError listing every issue)."""
    document, issues = check_new_document(parse_raw(decode(text), fmt))
    if document is None:
        raise PriceBookError(issues)
    return document


def document_to_data(
    document: PriceBookDocument, *, normalized_numbers: bool = False
) -> dict[str, Any]:
    """JSON-ready data (decimals as plain-digit strings as written, e.g. "0.50" and
    "0.0000009", never "9E-7"; times as RFC 3339 UTC); unset optionals dropped.
    `normalized_numbers`: decimals without trailing zeros ("0.5"), see canonical_json."""
    data: dict[str, Any] = document.model_dump(
        mode="json", exclude_none=True, context={NORMALIZED_NUMBERS: normalized_numbers}
    )
    return data


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def stored_json(document: PriceBookDocument) -> str:
    """The text a version is stored (and returned) as: numbers with the places they were
    written with, in plain digits."""
    return _dumps(document_to_data(document))


def canonical_json(document: PriceBookDocument) -> str:
    """One text per document, the input of the content hash: numbers without trailing zeros
    in plain digits, so that how a number is written (0.010 or 0.01, 150.00 or 150, 9e-7 or
    0.0000009) changes neither the text nor the hash."""
    return _dumps(document_to_data(document, normalized_numbers=True))


def content_hash(document: PriceBookDocument) -> str:
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def document_from_json(text: str) -> PriceBookDocument:
    """Read back a stored canonical document (already validated when it was stored)."""
    return validate_document(json.loads(text, parse_float=Decimal))


def stored_hash(text: str) -> str:
    """The content hash of a stored document by today's canonical form. Versions stored
    before the canonical form normalized numbers keep the hash they were stored with (of
    numbers as written, e.g. "0.010", "9E-7"); comparing by this hash finds them unchanged
    whichever way the same numbers are sent again."""
    return content_hash(document_from_json(text))


def stored_document_data(text: str) -> dict[str, Any]:
    """A stored document as JSON-ready data, numbers in plain digits (also for versions
    stored before that rule, whose text may have "9E-7")."""
    return document_to_data(document_from_json(text))
