"""Price book storage: immutable versions per tenant, the histories billing prices with, and
each tenant's default price book (the one used when no name is given).

Functions take `session` keyword-only, scope every query to the tenant and commit their
own unit of work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import ensure_utc, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.pricing.document import PriceBookDocument, UtcDatetime
from quartermaster.pricing.history import PriceBookHistory, PriceBookVersion
from quartermaster.pricing.loader import (
    DocumentFormat,
    PriceBookError,
    check_new_document,
    content_hash,
    decode,
    document_from_json,
    in_document_order,
    parse_raw,
    stored_hash,
    stored_json,
)
from quartermaster.pricing.models import PriceBookDefault, PriceBookVersionRow
from quartermaster.pricing.references import (
    meters_note,
    references,
    tenant_names,
    unknown_name_issues,
)

_EFFECTIVE_FROM: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


@dataclass(frozen=True, slots=True)
class StoredVersion:
    row: PriceBookVersionRow
    created: bool  # False: the same document was already stored (an idempotent retry)


@dataclass(frozen=True, slots=True)
class PriceBookSummary:
    name: str
    currency: str
    latest_version: int
    versions: int
    in_force_version: int | None  # at the time asked about (None: none yet in force)
    latest_recorded_at: datetime
    is_default: bool  # the tenant's default price book (see resolve_price_book_name)


def _rows(tenant_id: str, name: str, *, session: Session) -> list[PriceBookVersionRow]:
    query = (
        select(PriceBookVersionRow)
        .where(PriceBookVersionRow.tenant_id == tenant_id, PriceBookVersionRow.name == name)
        .order_by(PriceBookVersionRow.version)
    )
    return list(session.scalars(query))


def _same_version(
    tenant_id: str, document: PriceBookDocument, digest: str, *, session: Session
) -> StoredVersion | None:
    existing = session.scalar(
        select(PriceBookVersionRow).where(
            PriceBookVersionRow.tenant_id == tenant_id,
            PriceBookVersionRow.name == document.name,
            PriceBookVersionRow.version == document.version,
        )
    )
    if existing is None:
        return None
    if existing.content_hash == digest or stored_hash(existing.document) == digest:
        return StoredVersion(existing, created=False)
    raise ConflictError(
        f"price book {document.name!r} version {document.version} already exists with other "
        "content; versions are immutable: upload the change as a new version",
        field="version",
    )


def store_price_book(
    tenant_id: str,
    document: PriceBookDocument,
    *,
    created_by: str,
    session: Session,
    now: datetime | None = None,
) -> StoredVersion:
    """Store a new version. Re-sending a stored version unchanged returns it (created=False);
    changing a stored version, going back in version numbers or changing the currency is
    refused. An effective_from before now is allowed: a back-dated change. The tenant's
    first price book becomes its default price book."""
    digest = content_hash(document)
    recorded_at = ensure_utc(now) if now is not None else utc_now()
    # A second attempt follows a concurrent upload that stored this version or made another
    # book the default first.
    for attempt in (1, 2):
        same = _same_version(tenant_id, document, digest, session=session)
        if same is not None:
            return same
        first_book = session.get(PriceBookDefault, tenant_id) is None
        row = _new_version(tenant_id, document, digest, created_by, recorded_at, session=session)
        if first_book:
            session.add(
                PriceBookDefault(
                    tenant_id=tenant_id,
                    name=document.name,
                    chosen_at=recorded_at,
                    chosen_by=created_by,
                )
            )
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
            continue
        return StoredVersion(row, created=True)
    raise AssertionError("unreachable")


def upload_price_book(
    tenant_id: str,
    text: str | bytes,
    fmt: DocumentFormat,
    *,
    created_by: str,
    session: Session,
) -> StoredVersion:
    """Load a price book version from its text: refused (PriceBookError, with every issue
    at once) when a field is bad, a rule between fields is broken, or it names a meter,
    team, cost center or app the tenant does not have; else stored as store_price_book
    does. A stored version sent again unchanged is answered without checking the names."""
    data = parse_raw(decode(text), fmt)
    document, issues = check_new_document(data)
    if document is not None:
        same = _same_version(tenant_id, document, content_hash(document), session=session)
        if same is not None:
            return same
    effective_from = document.effective_from if document is not None else _effective_from(data)
    names = tenant_names(tenant_id, effective_from=effective_from, session=session)
    bad_fields = {path for path, _ in issues}
    found = [ref for ref in references(data) if ref.path not in bad_fields]
    unknown = unknown_name_issues(found, names)
    if document is None or unknown:  # a document is None only with issues
        meters = {ref.path for ref in found if ref.kind == "meter"}
        note = meters_note(names) if any(path in meters for path, _ in unknown) else None
        raise PriceBookError(in_document_order(issues + unknown), note=note)
    return store_price_book(tenant_id, document, created_by=created_by, session=session)


def _effective_from(data: Any) -> datetime | None:
    """A document's effective_from when that field is valid (the rest may not be)."""
    if not isinstance(data, dict):
        return None
    try:
        return _EFFECTIVE_FROM.validate_python(data.get("effective_from"))
    except ValidationError:
        return None


def _new_version(
    tenant_id: str,
    document: PriceBookDocument,
    digest: str,
    created_by: str,
    recorded_at: datetime,
    *,
    session: Session,
) -> PriceBookVersionRow:
    rows = _rows(tenant_id, document.name, session=session)
    if rows:
        latest = rows[-1]
        if document.version < latest.version:
            raise ConflictError(
                f"price book {document.name!r}: version {document.version} is older than the "
                f"latest version {latest.version}; upload version {latest.version + 1}",
                field="version",
            )
        if document.currency != latest.currency:
            raise InvalidInputError(
                f"price book {document.name!r} is priced in {latest.currency}; a new version "
                f"cannot change the currency to {document.currency} (start a new price book)",
                field="currency",
            )
    row = PriceBookVersionRow(
        tenant_id=tenant_id,
        name=document.name,
        version=document.version,
        currency=document.currency,
        effective_from=document.effective_from,
        document=stored_json(document),
        content_hash=digest,
        recorded_at=recorded_at,
        created_by=created_by,
    )
    session.add(row)
    return row


def to_version(row: PriceBookVersionRow) -> PriceBookVersion:
    return PriceBookVersion(document_from_json(row.document), row.recorded_at)


def list_versions(tenant_id: str, name: str, *, session: Session) -> list[PriceBookVersionRow]:
    rows = _rows(tenant_id, name, session=session)
    if not rows:
        raise NotFoundError(f"no price book named {name!r}", field="name")
    return rows


def get_version(
    tenant_id: str, name: str, version: int, *, session: Session
) -> PriceBookVersionRow:
    row = session.scalar(
        select(PriceBookVersionRow).where(
            PriceBookVersionRow.tenant_id == tenant_id,
            PriceBookVersionRow.name == name,
            PriceBookVersionRow.version == version,
        )
    )
    if row is None:
        list_versions(tenant_id, name, session=session)  # names a missing book first
        raise NotFoundError(f"price book {name!r} has no version {version}", field="version")
    return row


def load_history(tenant_id: str, name: str, *, session: Session) -> PriceBookHistory:
    """Every stored version of a price book, for pricing (see pricing.engine.price_period)."""
    return PriceBookHistory(
        to_version(row) for row in list_versions(tenant_id, name, session=session)
    )


def version_in_force(
    tenant_id: str,
    name: str,
    at: datetime,
    *,
    as_of: datetime | None = None,
    session: Session,
) -> PriceBookVersionRow:
    """The stored version in force at `at`, as known at `as_of` (default: now)."""
    history = load_history(tenant_id, name, session=session)
    chosen = history.version_at(at, as_of=as_of)
    return get_version(tenant_id, name, chosen.version, session=session)


def price_book_names(tenant_id: str, *, session: Session) -> list[str]:
    query = (
        select(PriceBookVersionRow.name)
        .where(PriceBookVersionRow.tenant_id == tenant_id)
        .distinct()
        .order_by(PriceBookVersionRow.name)
    )
    return list(session.scalars(query))


def default_price_book(tenant_id: str, *, session: Session) -> PriceBookDefault | None:
    """The tenant's default price book (None: the tenant has no price book yet)."""
    return session.get(PriceBookDefault, tenant_id)


def default_price_book_name(tenant_id: str, *, session: Session) -> str | None:
    chosen = default_price_book(tenant_id, session=session)
    return chosen.name if chosen is not None else None


def default_currency(tenant_id: str, *, session: Session) -> str | None:
    """The currency of the tenant's default price book (its latest version's); None without
    a price book."""
    name = default_price_book_name(tenant_id, session=session)
    if name is None:
        return None
    return session.scalar(
        select(PriceBookVersionRow.currency)
        .where(PriceBookVersionRow.tenant_id == tenant_id, PriceBookVersionRow.name == name)
        .order_by(PriceBookVersionRow.version.desc())
        .limit(1)
    )


def set_default_price_book(
    tenant_id: str,
    name: str,
    *,
    chosen_by: str,
    session: Session,
    now: datetime | None = None,
) -> PriceBookDefault:
    """Make `name` (a price book of the tenant) the one billing, previews and guardrails use
    when no name is given. Choosing the current default again changes nothing."""
    if name not in price_book_names(tenant_id, session=session):
        raise NotFoundError(f"no price book named {name!r}", field="name")
    for attempt in (1, 2):
        chosen = session.get(PriceBookDefault, tenant_id)
        if chosen is not None and chosen.name == name:
            return chosen
        moment = ensure_utc(now) if now is not None else utc_now()
        if chosen is None:
            chosen = PriceBookDefault(tenant_id=tenant_id, name=name)
            session.add(chosen)
        chosen.name, chosen.chosen_at, chosen.chosen_by = name, moment, chosen_by
        try:
            session.commit()
        except IntegrityError:
            # A concurrent first upload recorded a default meanwhile: choose over it.
            session.rollback()
            if attempt == 2:
                raise
            continue
        return chosen
    raise AssertionError("unreachable")


def resolve_price_book_name(tenant_id: str, name: str | None, *, session: Session) -> str:
    """The price book to bill with: `name` when given, else the tenant's default."""
    if name is not None:
        if name not in price_book_names(tenant_id, session=session):
            raise NotFoundError(f"no price book named {name!r}", field="price_book")
        return name
    chosen = default_price_book_name(tenant_id, session=session)
    if chosen is not None:
        return chosen
    names = price_book_names(tenant_id, session=session)
    if not names:
        raise NotFoundError("the tenant has no price book: upload one first", field="price_book")
    # Only versions stored around the storage layer have no default recorded.
    raise InvalidInputError(
        f"the tenant has no default price book among {', '.join(names)}: choose one "
        "(qm pricebook use NAME)",
        field="price_book",
    )


def list_price_books(
    tenant_id: str, *, at: datetime | None = None, session: Session
) -> list[PriceBookSummary]:
    """Each price book with its latest version and the version in force at `at` (now)."""
    moment = ensure_utc(at) if at is not None else utc_now()
    query = (
        select(
            PriceBookVersionRow.name,
            PriceBookVersionRow.version,
            PriceBookVersionRow.currency,
            PriceBookVersionRow.effective_from,
            PriceBookVersionRow.recorded_at,
        )
        .where(PriceBookVersionRow.tenant_id == tenant_id)
        .order_by(PriceBookVersionRow.name, PriceBookVersionRow.version)
    )
    by_name: dict[str, list[tuple[int, str, datetime, datetime]]] = {}
    for name, version, currency, effective_from, recorded_at in session.execute(query):
        by_name.setdefault(name, []).append((version, currency, effective_from, recorded_at))
    default = default_price_book_name(tenant_id, session=session)
    summaries: list[PriceBookSummary] = []
    for name, versions in by_name.items():
        in_force = [v[0] for v in versions if v[2] <= moment]
        summaries.append(
            PriceBookSummary(
                name=name,
                currency=versions[-1][1],
                latest_version=versions[-1][0],
                versions=len(versions),
                in_force_version=max(in_force) if in_force else None,
                latest_recorded_at=max(v[3] for v in versions),
                is_default=name == default,
            )
        )
    return summaries
