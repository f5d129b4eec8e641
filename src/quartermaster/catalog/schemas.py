"""HTTP request and response bodies of the catalog API: apps, ownership, signing keys,
resources and leases."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from quartermaster.catalog.models import Lifecycle, SigningKeyStatus
from quartermaster.catalog.resources import MAX_LEASE_TTL_SECONDS
from quartermaster.domain.timeutil import RequestMoment
from quartermaster.tenancy.schemas import SECRET_WARNING


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AppCreate(_In):
    app_id: str = Field(description="Stable slug that events name, e.g. `invoice-bot`.")
    title: str | None = Field(default=None, description="Display title (default: the app_id).")
    owner: str = Field(description="The accountable person, e.g. an email.")
    team: str = Field(description="Slug of the owning team.")
    cost_center: str | None = Field(
        default=None,
        description="Slug of the paying cost center; default: the team's default cost center "
        "(refused if the team has none).",
    )
    lifecycle: Lifecycle = Lifecycle.PERSISTENT
    environment: str = "production"
    require_signatures: bool = Field(
        default=False, description="Refuse this app's events unless HMAC-signed."
    )
    owned_since: RequestMoment | None = Field(
        default=None,
        description="When the team began to own the app (default now; not in the future). "
        "Back-date it for an app that ran before it was registered, so its earlier usage "
        "is charged to its owner.",
    )


class AppUpdate(_In):
    """Only the fields sent change. A change of team or cost center is dated by
    `effective_at` (default now): the current ownership ends there and a new one begins."""

    title: str | None = None
    owner: str | None = None
    lifecycle: Lifecycle | None = None
    environment: str | None = None
    require_signatures: bool | None = None
    team: str | None = None
    cost_center: str | None = None
    effective_at: RequestMoment | None = Field(
        default=None,
        description="When a change of team or cost center takes effect: not before the "
        "current ownership began, not in the future.",
    )

    @field_validator(
        "title", "owner", "lifecycle", "environment", "require_signatures", "team", "cost_center"
    )
    @classmethod
    def _no_nulls(cls, value: object, info: ValidationInfo) -> object:
        # Validators run only on fields that were sent, so None here is an explicit null.
        if value is None:
            raise ValueError(f"{info.field_name} may not be null: leave it out to keep it")
        return value


class AppOut(_Out):
    app_id: str
    title: str
    owner: str
    team: str
    cost_center: str
    lifecycle: Lifecycle
    environment: str
    require_signatures: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class OwnershipOut(_Out):
    team: str
    cost_center: str
    valid_from: datetime
    valid_to: datetime | None = Field(description="Exclusive; null while current.")


class AppDetailOut(AppOut):
    ownership: list[OwnershipOut] = Field(description="Dated ownership, oldest first.")


class AppUpdatedOut(AppDetailOut):
    rated_usage_note: str | None = Field(
        default=None,
        description="Set after a back-dated change of team or cost center (effective_at in "
        "the past): usage the pipeline already rated stays with the earlier owner until "
        "POST /v1/pipeline/replay (qm pipeline replay) rates it again.",
    )


class SigningKeyCreatedOut(BaseModel):
    key_id: str = Field(description="Name it in each signed event.")
    app_id: str
    secret: str = Field(description="HMAC-SHA256 key, hex. Shown once.")
    warning: str = SECRET_WARNING


class SigningKeyOut(_Out):
    key_id: str
    app_id: str
    status: SigningKeyStatus
    created_at: datetime
    retired_at: datetime | None


class ResourceCreate(_In):
    resource_id: str = Field(description="The resource's id as its events name it.")
    app_id: str
    valid_from: RequestMoment | None = Field(default=None, description="Default: now.")
    valid_to: RequestMoment | None = Field(default=None, description="Exclusive; null: open.")
    environment: str | None = Field(default=None, description="Default: the app's.")


class ResourceEnd(_In):
    resource_id: str = Field(description="The resource whose binding ends.")
    at: RequestMoment | None = Field(
        default=None,
        description="When the binding in force then ends (exclusive). Default and earliest: now"
        " plus QM_MAX_FUTURE_SKEW_SECONDS, whole seconds (events stamped up to that far ahead"
        " are already rated under the binding).",
    )


class ResourceOut(_Out):
    resource_id: str
    app_id: str
    environment: str | None
    valid_from: datetime
    valid_to: datetime | None
    lease_id: str | None


class LeaseCreate(_In):
    resource_id: str
    app_id: str
    ttl_seconds: int = Field(ge=1, le=MAX_LEASE_TTL_SECONDS, description="At most 7 days.")
    environment: str | None = Field(default=None, description="Default: the app's.")
    issued_at: RequestMoment | None = Field(
        default=None,
        description="Start of the lease (default now; not in the future). Back-date it to "
        "record a resource that ran while its events were buffered.",
    )


class LeaseIssuedOut(_Out):
    lease_id: str
    resource_id: str
    app_id: str
    token: str = Field(description="Signed lease token the resource presents with its events.")
    issued_at: datetime
    expires_at: datetime


class ResourceLeaseOut(_Out):
    lease_id: str
    resource_id: str
    app_id: str
    issued_at: datetime
    expires_at: datetime
    ended_at: datetime = Field(
        description="When the lease ends: its revocation if ended early, else its expiry (a moment"
        " still to come while the lease runs). Ended early, its resource stays bound to the app"
        " up to QM_MAX_FUTURE_SKEW_SECONDS longer (GET /v1/resources shows until when)."
    )
