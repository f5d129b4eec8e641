"""/v1/secrets: versioned KV, dynamic engines and credentials, access rules, scan matching and
stream redaction. Thin: each route calls one service function."""

from __future__ import annotations

import codecs
import tempfile
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from quartermaster.api.deps import SessionDep
from quartermaster.api.params import Int64
from quartermaster.api.responses import error_responses, rate_limited
from quartermaster.secrets import dynamic, engines, exposure, kv, kv_lifecycle, workloads
from quartermaster.secrets.api_deps import (
    BrokerConfigurer,
    BrokerDestroyer,
    BrokerLister,
    BrokerReader,
    BrokerWriter,
    FindingsMatcher,
    FingerprintKeyReader,
    RulesReader,
    SecretsContextDep,
    StreamRedactor,
)
from quartermaster.secrets.redaction import Redactor
from quartermaster.secrets.schemas import (
    AccessRulesIO,
    CredentialIn,
    CredentialOut,
    EngineIn,
    EngineOut,
    FingerprintKeyOut,
    MatchIn,
    MatchList,
    MatchOut,
    RotateIn,
    RotateOut,
    SecretList,
    SecretMetaOut,
    SecretOut,
    VersionOut,
    VersionsIn,
    VersionsOut,
    WriteIn,
)

router = APIRouter(prefix="/v1/secrets", tags=["secrets"])
_SPOOL_MEMORY_BYTES = 1 << 20
_CHUNK_CHARS = 64 * 1024


@router.put(
    "/data/{path:path}",
    summary="Write a new version",
    response_model=VersionOut,
    responses=error_responses(409),  # check-and-set: cas is not the current version
)
def write_secret(
    path: str,
    body: WriteIn,
    requester: BrokerWriter,
    ctx: SecretsContextDep,
    session: SessionDep,
) -> VersionOut:
    meta = kv.write_secret(requester, path, body.value, cas=body.cas, ctx=ctx, session=session)
    return VersionOut.of(meta)


@router.get(
    "/data/{path:path}",
    summary="Read a version under a new lease",
    responses=rate_limited("The holder already has `secrets_max_leases_per_app` live leases."),
)
def read_secret(
    path: str,
    requester: BrokerReader,
    ctx: SecretsContextDep,
    session: SessionDep,
    version: Annotated[
        Int64 | None, Query(ge=1, description="This version; default: the latest.")
    ] = None,
    ttl_seconds: Annotated[
        int | None, Query(ge=1, description="The lease's length (capped by the maximum).")
    ] = None,
) -> SecretOut:
    value = kv.read_secret(
        requester, path, version=version, ttl_seconds=ttl_seconds, ctx=ctx, session=session
    )
    return SecretOut.of(value)


@router.get("/metadata", summary="List paths and version metadata (never values)")
def list_secrets(
    requester: BrokerLister,
    session: SessionDep,
    prefix: Annotated[str, Query(description="Only paths starting with this.")] = "",
    limit: Annotated[int, Query(ge=1, le=5000, description="At most this many paths.")] = 1000,
) -> SecretList:
    metas = kv.list_secrets(requester, prefix=prefix, limit=limit, session=session)
    return SecretList(secrets=[SecretMetaOut.of(m) for m in metas])


@router.get("/metadata/{path:path}", summary="Metadata of one path and its versions")
def describe_secret(path: str, requester: BrokerLister, session: SessionDep) -> SecretMetaOut:
    return SecretMetaOut.of(kv.describe_secret(requester, path, session=session))


@router.post("/delete/{path:path}", summary="Soft-delete versions (default: latest)")
def delete_versions(
    path: str, body: VersionsIn, requester: BrokerWriter, session: SessionDep
) -> VersionsOut:
    rows = kv_lifecycle.delete_versions(requester, path, body.versions, session=session)
    return VersionsOut(path=path.strip("/"), versions=[VersionOut.of(r) for r in rows])


@router.post("/undelete/{path:path}", summary="Undo a soft-delete")
def undelete_versions(
    path: str, body: VersionsIn, requester: BrokerWriter, session: SessionDep
) -> VersionsOut:
    rows = kv_lifecycle.undelete_versions(requester, path, body.versions, session=session)
    return VersionsOut(path=path.strip("/"), versions=[VersionOut.of(r) for r in rows])


@router.post("/destroy/{path:path}", summary="Erase versions' ciphertext for good")
def destroy_versions(
    path: str,
    body: VersionsIn,
    requester: BrokerDestroyer,
    ctx: SecretsContextDep,
    session: SessionDep,
) -> VersionsOut:
    rows = kv_lifecycle.destroy_versions(requester, path, body.versions, ctx=ctx, session=session)
    return VersionsOut(path=path.strip("/"), versions=[VersionOut.of(r) for r in rows])


@router.post("/rotate/{path:path}", summary="New version and revoke the path's leases")
def rotate_secret(
    path: str,
    body: RotateIn,
    requester: BrokerWriter,
    ctx: SecretsContextDep,
    session: SessionDep,
) -> RotateOut:
    result = kv_lifecycle.rotate_secret(requester, path, body.value, ctx=ctx, session=session)
    return RotateOut.of(path.strip("/"), result)


@router.put(
    "/engines/{path:path}",
    summary="Mount or update a dynamic PostgreSQL engine",
    # 409: a new connection_url while the engine has live leases
    responses=error_responses(409),
)
def put_engine(
    path: str,
    body: EngineIn,
    requester: BrokerConfigurer,
    ctx: SecretsContextDep,
    session: SessionDep,
) -> EngineOut:
    info = engines.configure_postgres_engine(
        requester,
        path,
        grants=body.grants,
        connection_url=body.connection_url,
        default_ttl_seconds=body.default_ttl_seconds,
        max_ttl_seconds=body.max_ttl_seconds,
        ctx=ctx,
        session=session,
    )
    return EngineOut.of(info)


@router.get("/engines/{path:path}", summary="An engine's configuration (no connection)")
def get_engine(path: str, requester: BrokerConfigurer, session: SessionDep) -> EngineOut:
    return EngineOut.of(engines.get_engine(requester, path, session=session))


@router.delete(
    "/engines/{path:path}",
    status_code=204,
    summary="Unmount an engine",
    responses=error_responses(409),  # the engine still has live leases
)
def delete_engine(path: str, requester: BrokerConfigurer, session: SessionDep) -> None:
    engines.delete_engine(requester, path, session=session)


@router.post(
    "/creds/{path:path}",
    summary="Issue a dynamic credential under a new lease",
    responses=rate_limited("The holder already has `secrets_max_leases_per_app` live leases."),
)
def issue_credential(
    path: str,
    body: CredentialIn,
    requester: BrokerReader,
    ctx: SecretsContextDep,
    session: SessionDep,
) -> CredentialOut:
    cred = dynamic.issue_postgres_credential(
        requester, path, ttl_seconds=body.ttl_seconds, ctx=ctx, session=session
    )
    return CredentialOut.of(cred)


@router.get("/access-rules", summary="Workload access rules in effect")
def get_access_rules(requester: RulesReader, session: SessionDep) -> AccessRulesIO:
    return AccessRulesIO.of(workloads.get_access_rules(requester, session=session))


@router.put("/access-rules", summary="Replace the workload access rules")
def put_access_rules(
    body: AccessRulesIO, requester: BrokerConfigurer, session: SessionDep
) -> AccessRulesIO:
    rules = [r.to_rule() for r in body.rules]
    return AccessRulesIO.of(workloads.set_access_rules(requester, rules, session=session))


@router.get("/fingerprint-key", summary="The HMAC key `qm scan` fingerprints findings with")
def get_fingerprint_key(
    requester: FingerprintKeyReader, ctx: SecretsContextDep, session: SessionDep
) -> FingerprintKeyOut:
    return FingerprintKeyOut(key=exposure.fingerprint_key(requester, ctx=ctx, session=session))


@router.post("/match", summary="Which stored versions have these fingerprints")
def match(body: MatchIn, requester: FindingsMatcher, session: SessionDep) -> MatchList:
    found = exposure.match_fingerprints(requester, body.fingerprints, session=session)
    return MatchList(
        matches=[
            MatchOut(
                fingerprint=m.fingerprint,
                path=m.path,
                version=m.version,
                is_current=m.is_current,
                destroyed=m.destroyed,
            )
            for m in found
        ]
    )


@router.post(
    "/redact",
    summary="Stream text back with every live leased value replaced",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The text, every live leased value replaced",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    # The body is read as a stream (any text, any size), so FastAPI does not declare it.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def redact_stream(
    request: Request,
    requester: StreamRedactor,
    ctx: SecretsContextDep,
    prefix: Annotated[
        str, Query(description="Only values of live leases on paths starting with this.")
    ] = "",
    lease_id: Annotated[
        list[str] | None, Query(description="Only the values of these leases (repeatable).")
    ] = None,
) -> StreamingResponse:
    def build() -> Redactor:
        with ctx.session_factory() as session:
            return exposure.redactor_for(
                requester, prefix=prefix, lease_ids=lease_id, ctx=ctx, session=session
            )

    redactor = await run_in_threadpool(build)
    # The request is redacted while it is read, into a spooled buffer (memory stays bounded),
    # and sent back once read: clients finish sending before they read, and a response that
    # read its request while streaming would race Starlette's disconnect listener.
    # Closed by body() once sent: it outlives this function, so no `with` here.
    spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115
        max_size=_SPOOL_MEMORY_BYTES, mode="w+", encoding="utf-8"
    )
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in request.stream():
        spool.write(redactor.feed(decoder.decode(chunk)))
    spool.write(redactor.feed(decoder.decode(b"", final=True)) + redactor.flush())
    spool.seek(0)

    async def body() -> AsyncIterator[str]:
        try:
            while piece := spool.read(_CHUNK_CHARS):
                yield piece
        finally:
            spool.close()

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")
