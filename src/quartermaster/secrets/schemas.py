"""Request and response bodies of the secrets, leases and identity API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from quartermaster.api.params import Int64, one_of
from quartermaster.secrets.access import AccessRule
from quartermaster.secrets.dynamic import DynamicCredential
from quartermaster.secrets.engines import EngineInfo
from quartermaster.secrets.kv import SecretMeta, SecretValue, VersionMeta
from quartermaster.secrets.kv_lifecycle import RotateResult
from quartermaster.secrets.leases import LeaseInfo
from quartermaster.secrets.postgres import GrantSpec
from quartermaster.secrets.revocation import PrefixRevokeResult, RevokeResult


class LeaseOut(BaseModel):
    id: str
    ttl: int = Field(
        description="Seconds left until the lease ends, rounded up (a fresh lease reads as "
        "granted; 0 once ended)."
    )
    max_ttl: int = Field(description="Longest the lease may live from issue, renewals included.")
    kind: str
    path: str
    version: int | None
    holder: str = Field(description="Who holds it, the quota key: app:<app> or principal:<id>.")
    holder_name: str = Field(
        description="The holder as errors and audit records name it: principal:<name> for a "
        "principal, else the same as holder."
    )
    state: str
    issued_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    cleanup_pending: bool = Field(
        description="The lease is ended but its dynamic PostgreSQL role is not dropped yet; the "
        "reaper retries."
    )
    cleanup_error: str | None = Field(
        default=None,
        description="While cleanup_pending: why the role is not dropped yet, naming the step "
        "that failed (whether its login was disabled).",
    )
    key_id: str | None = Field(
        default=None,
        description="The API key the lease ends with: the one it was obtained with, or the "
        "one that minted the identity token it was obtained with (revoked or expired, it "
        "ends the lease). Null: issued before leases were bound to keys.",
    )

    @classmethod
    def of(cls, info: LeaseInfo) -> LeaseOut:
        return cls(
            id=info.id,
            ttl=info.ttl_seconds(),
            max_ttl=info.max_ttl_seconds,
            kind=info.kind,
            path=info.path,
            version=info.version,
            holder=info.holder,
            holder_name=info.holder_name,
            state=info.state,
            issued_at=info.issued_at,
            expires_at=info.expires_at,
            max_expires_at=info.max_expires_at,
            ended_at=info.ended_at,
            end_reason=info.end_reason,
            cleanup_pending=info.cleanup_pending,
            cleanup_error=info.cleanup_error,
            key_id=info.key_id,
        )


class VersionOut(BaseModel):
    version: int
    created_at: datetime
    created_by: str
    size_bytes: int
    deleted_at: datetime | None
    destroyed_at: datetime | None

    @classmethod
    def of(cls, meta: VersionMeta) -> VersionOut:
        return cls(
            version=meta.version,
            created_at=meta.created_at,
            created_by=meta.created_by,
            size_bytes=meta.size_bytes,
            deleted_at=meta.deleted_at,
            destroyed_at=meta.destroyed_at,
        )


class SecretMetaOut(BaseModel):
    path: str
    current_version: int
    created_at: datetime
    updated_at: datetime
    versions: list[VersionOut]

    @classmethod
    def of(cls, meta: SecretMeta) -> SecretMetaOut:
        return cls(
            path=meta.path,
            current_version=meta.current_version,
            created_at=meta.created_at,
            updated_at=meta.updated_at,
            versions=[VersionOut.of(v) for v in meta.versions],
        )


class SecretList(BaseModel):
    secrets: list[SecretMetaOut]


class SecretOut(BaseModel):
    path: str
    version: int
    value: str
    lease: LeaseOut

    @classmethod
    def of(cls, value: SecretValue) -> SecretOut:
        return cls(
            path=value.path,
            version=value.version,
            value=value.value,
            lease=LeaseOut.of(value.lease),
        )


class WriteIn(BaseModel):
    value: str = Field(description="The secret value (UTF-8 text).")
    cas: Int64 | None = Field(
        default=None,
        ge=0,
        description="Check-and-set: write only if the current version is this (0: only if new).",
    )


class VersionsIn(BaseModel):
    versions: list[Int64] | None = Field(
        default=None, description="Version numbers; omitted: the latest version."
    )


class VersionsOut(BaseModel):
    path: str
    versions: list[VersionOut]


class RotateIn(BaseModel):
    value: str | None = Field(
        default=None, description="The new value; omitted: a random 256-bit URL-safe value."
    )


class RotateOut(BaseModel):
    path: str
    version: VersionOut
    revoked_leases: int
    generated: bool

    @classmethod
    def of(cls, path: str, result: RotateResult) -> RotateOut:
        return cls(
            path=path,
            version=VersionOut.of(result.version),
            revoked_leases=result.revoked_leases,
            generated=result.generated,
        )


class EngineIn(BaseModel):
    connection_url: str | None = Field(
        default=None,
        description="Admin connection to the target database (stored sealed); omitted: the "
        "server's QM_SECRETS_POSTGRES_URL.",
    )
    grants: list[GrantSpec] = Field(description="The role template: grants for each new role.")
    default_ttl_seconds: int | None = Field(default=None, ge=1)
    max_ttl_seconds: int | None = Field(default=None, ge=1)


class EngineOut(BaseModel):
    path: str
    kind: str
    has_own_connection: bool
    grants: list[GrantSpec]
    default_ttl_seconds: int
    max_ttl_seconds: int
    updated_at: datetime

    @classmethod
    def of(cls, info: EngineInfo) -> EngineOut:
        return cls(
            path=info.path,
            kind=info.kind,
            has_own_connection=info.has_own_connection,
            grants=info.grants,
            default_ttl_seconds=info.default_ttl_seconds,
            max_ttl_seconds=info.max_ttl_seconds,
            updated_at=info.updated_at,
        )


class CredentialIn(BaseModel):
    ttl_seconds: int | None = Field(default=None, ge=1)


class CredentialOut(BaseModel):
    path: str
    username: str
    password: str
    lease: LeaseOut

    @classmethod
    def of(cls, cred: DynamicCredential) -> CredentialOut:
        return cls(
            path=cred.path,
            username=cred.username,
            password=cred.password,
            lease=LeaseOut.of(cred.lease),
        )


class RenewIn(BaseModel):
    increment_seconds: int | None = Field(
        default=None, ge=1, description="Extend to now + this (capped by max_ttl)."
    )


class RevokeOut(BaseModel):
    lease_id: str
    status: Annotated[str, one_of(("revoked", "already_ended", "not_found"))] = Field(
        description="All three are success: the lease is not live."
    )
    cleanup_pending: bool

    @classmethod
    def of(cls, result: RevokeResult) -> RevokeOut:
        return cls(
            lease_id=result.lease_id,
            status=result.status,
            cleanup_pending=result.cleanup_pending,
        )


class RevokePrefixIn(BaseModel):
    prefix: str


class RevokePrefixOut(BaseModel):
    prefix: str
    revoked: int
    cleanup_pending: int

    @classmethod
    def of(cls, result: PrefixRevokeResult) -> RevokePrefixOut:
        return cls(
            prefix=result.prefix, revoked=result.revoked, cleanup_pending=result.cleanup_pending
        )


class LeaseList(BaseModel):
    leases: list[LeaseOut]


class TokenIn(BaseModel):
    app_id: str
    job_id: str | None = None
    ttl_seconds: int | None = Field(default=None, ge=1)
    audience: str | None = None


class TokenOut(BaseModel):
    token: str
    token_type: str = "Bearer"
    subject: str
    expires_at: datetime


class AccessRuleIO(BaseModel):
    role: str = Field(description="app:<app>, app:*, job:<job> or job:*")
    paths: list[str] = Field(description="Patterns; {app}, {team}, {job} are the token's.")

    def to_rule(self) -> AccessRule:
        return AccessRule(role=self.role, paths=tuple(self.paths))


class AccessRulesIO(BaseModel):
    rules: list[AccessRuleIO]

    @classmethod
    def of(cls, rules: tuple[AccessRule, ...]) -> AccessRulesIO:
        return cls(rules=[AccessRuleIO(role=r.role, paths=list(r.paths)) for r in rules])


class FingerprintKeyOut(BaseModel):
    key: str | None = Field(description="Hex HMAC-SHA256 key; null while no secret is stored.")


class MatchIn(BaseModel):
    fingerprints: list[str]


class MatchOut(BaseModel):
    fingerprint: str
    path: str
    version: int
    is_current: bool
    destroyed: bool


class MatchList(BaseModel):
    matches: list[MatchOut]
