"""API bodies of the price book routes (the upload body is the document itself)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from quartermaster.pricing.history import PriceBookHistory
from quartermaster.pricing.models import PriceBookDefault, PriceBookVersionRow
from quartermaster.pricing.service import PriceBookSummary


class PriceBookVersionOut(BaseModel):
    name: str
    version: int
    currency: str
    effective_from: datetime
    recorded_at: datetime = Field(description="When the version was stored (its creation).")
    created_by: str
    content_hash: str
    back_dated: bool = Field(description="effective_from is before recorded_at.")
    in_force_from: datetime | None = Field(
        description="Start of the time this version is in force; null if a later version "
        "took effect at or before its effective_from."
    )
    in_force_until: datetime | None = Field(
        description="When a later version supersedes it; null while still in force."
    )

    @classmethod
    def build(cls, row: PriceBookVersionRow, history: PriceBookHistory) -> PriceBookVersionOut:
        interval = history.in_force_interval(row.version)
        return cls(
            name=row.name,
            version=row.version,
            currency=row.currency,
            effective_from=row.effective_from,
            recorded_at=row.recorded_at,
            created_by=row.created_by,
            content_hash=row.content_hash,
            back_dated=row.effective_from < row.recorded_at,
            in_force_from=interval[0] if interval else None,
            in_force_until=interval[1] if interval else None,
        )


class PriceBookVersionDetail(PriceBookVersionOut):
    document: dict[str, Any] = Field(description="The price book document (docs/pricing.md).")


class SupersededVersionOut(BaseModel):
    version: int
    effective_from: datetime


class PriceBookUploadOut(PriceBookVersionOut):
    created: bool = Field(description="False when this exact version was already stored.")
    superseded_versions: list[SupersededVersionOut] = Field(
        default_factory=list,
        description="Versions that were in force until this upload and never will be now: "
        "this version takes effect at or before their effective_from (a back-dated upload). "
        "Empty for an unchanged re-upload.",
    )

    @classmethod
    def answer(
        cls, row: PriceBookVersionRow, history: PriceBookHistory, *, created: bool
    ) -> PriceBookUploadOut:
        out = PriceBookVersionOut.build(row, history)
        gone = history.taken_out_of_force_by(row.version) if created else []
        return cls(
            **out.model_dump(),
            created=created,
            superseded_versions=[
                SupersededVersionOut(version=v.version, effective_from=v.effective_from)
                for v in gone
            ],
        )


class PriceBookSummaryOut(BaseModel):
    name: str
    currency: str
    latest_version: int
    versions: int
    in_force_version: int | None
    latest_recorded_at: datetime
    default: bool = Field(
        description="The tenant's default price book: the one billing runs, previews and "
        "guardrails use when no price book is named."
    )

    @classmethod
    def build(cls, summary: PriceBookSummary) -> PriceBookSummaryOut:
        return cls(
            name=summary.name,
            currency=summary.currency,
            latest_version=summary.latest_version,
            versions=summary.versions,
            in_force_version=summary.in_force_version,
            latest_recorded_at=summary.latest_recorded_at,
            default=summary.is_default,
        )


class DefaultPriceBookIn(BaseModel):
    name: str = Field(
        min_length=1, max_length=64, description="A price book of the tenant's, by name."
    )


class DefaultPriceBookOut(BaseModel):
    name: str = Field(description="The tenant's default price book.")
    chosen_at: datetime = Field(
        description="When it became the default (its first load, for a tenant's first book)."
    )
    chosen_by: str

    @classmethod
    def build(cls, row: PriceBookDefault) -> DefaultPriceBookOut:
        return cls(name=row.name, chosen_at=row.chosen_at, chosen_by=row.chosen_by)
