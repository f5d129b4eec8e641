"""HTTP request and response bodies of the tenancy API (slugs, never internal row ids,
except for principals and keys, whose ids are their public handles)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from quartermaster.domain.timeutil import RequestMoment
from quartermaster.tenancy.management import TEAM_MEMBER_KEY_MAX_LIFETIME
from quartermaster.tenancy.models import PrincipalKind, Role
from quartermaster.tenancy.service import KeyStatus

SECRET_WARNING = "This secret is shown once: store it now; it cannot be retrieved again."


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TenantOut(_Out):
    tenant_id: str
    name: str
    timezone: str
    created_at: datetime


class TenantUpdate(_In):
    timezone: str = Field(
        description="IANA time zone of the tenant's months, budget days and caps, e.g. "
        "`Europe/Berlin` (`UTC` by default). Future billing runs, previews and budget periods "
        "use it; finalized invoices and ledger entries keep their periods."
    )


class CostCenterCreate(_In):
    slug: str = Field(description="Stable identifier, e.g. `marketing`.")
    name: str | None = Field(default=None, description="Display name (default: the slug).")


class CostCenterOut(_Out):
    slug: str
    name: str
    is_default: bool = Field(description="The tenant's catch-all for unattributed usage.")
    created_at: datetime


class TeamCreate(_In):
    slug: str = Field(description="Stable identifier, e.g. `data-science`.")
    name: str | None = Field(default=None, description="Display name (default: the slug).")
    cost_center: str | None = Field(
        default=None, description="Default cost center (slug) for apps this team registers."
    )


class TeamOut(_Out):
    slug: str
    name: str
    cost_center: str | None
    created_at: datetime


class PrincipalCreate(_In):
    name: str = Field(
        description="Unique in the tenant, e.g. an email or `ci-bot`; 1-200 characters, not "
        "32 lowercase hex digits (a principal id's shape: keys are issued by id or name), "
        "without control characters or bidirectional overrides or isolates."
    )
    kind: PrincipalKind = PrincipalKind.USER
    role: Role
    team: str | None = Field(default=None, description="Team slug; required for team-member.")
    app_id: str | None = Field(default=None, description="App slug; required for role app.")


class PrincipalOut(_Out):
    id: str
    name: str
    kind: PrincipalKind
    role: Role
    team: str | None
    app_id: str | None
    created_at: datetime


class ApiKeyCreate(_In):
    expires_at: RequestMoment | None = Field(
        default=None,
        description="After this instant the key is refused (401). Admins: optional (none: "
        "the key never expires). A team-member's key (of its team's apps' app principals) "
        f"expires within {TEAM_MEMBER_KEY_MAX_LIFETIME.days} days: that long when left out, "
        "a later instant is a 403.",
    )


class IssuedApiKeyOut(BaseModel):
    key_id: str
    principal_id: str
    token: str = Field(description="The bearer token. Shown once.")
    expires_at: datetime | None
    warning: str = SECRET_WARNING


class ApiKeyOut(_Out):
    key_id: str
    principal_id: str
    principal_name: str
    status: KeyStatus
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
