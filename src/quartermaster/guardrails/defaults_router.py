"""Routes of default hard caps, the tenant's guardrail settings and the preview invoices made
after high-cost hours. Thin: each calls one service function."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from quartermaster.api.deps import AdminCaller, Reader, ReadSessionDep, RuntimeDep, SessionDep
from quartermaster.guardrails import caps, previews
from quartermaster.guardrails.defaults_schemas import (
    CapTargetName,
    CostPreviewOut,
    DefaultCapIn,
    DefaultCapOut,
    GuardrailSettingsIn,
    GuardrailSettingsOut,
)
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.models import CostPreview, GuardrailSettings
from quartermaster.tenancy.service import AuthContext

router = APIRouter(tags=["guardrails"])


@router.put(
    "/v1/default-caps",
    response_model=DefaultCapOut,
    summary="Set the hard cap every ephemeral or non-production app gets by default",
)
def put_default_cap(body: DefaultCapIn, caller: AdminCaller, session: SessionDep) -> DefaultCapOut:
    spec = caps.CapSpec(body.applies_to, body.amount, body.period, body.action, body.currency)
    return DefaultCapOut.model_validate(caps.set_default_cap(caller, spec, session=session))


@router.get("/v1/default-caps", response_model=list[DefaultCapOut], summary="Default hard caps")
def get_default_caps(caller: Reader, session: ReadSessionDep) -> list[DefaultCapOut]:
    rows = caps.list_default_caps(caller.tenant_id, session=session)
    return [DefaultCapOut.model_validate(r) for r in rows]


@router.delete(
    "/v1/default-caps/{applies_to}", status_code=204, summary="Remove a default hard cap"
)
def delete_default_cap(
    applies_to: Annotated[CapTargetName, Path(description="The kind of app the cap is for.")],
    caller: AdminCaller,
    runtime: RuntimeDep,
    session: SessionDep,
) -> Response:
    caps.delete_default_cap(caller, applies_to, session=session)
    guardrail_gate(runtime).invalidate(caller.tenant_id)  # what it ended, at once
    return Response(status_code=204)


def _settings(row: GuardrailSettings | None) -> GuardrailSettingsOut:
    if row is None:
        return GuardrailSettingsOut(high_cost_hour_amount=None, updated_by=None, updated_at=None)
    return GuardrailSettingsOut(
        high_cost_hour_amount=row.high_cost_hour_amount,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


@router.get(
    "/v1/guardrail-settings",
    response_model=GuardrailSettingsOut,
    summary="The tenant's guardrail settings",
)
def get_guardrail_settings(caller: Reader, session: ReadSessionDep) -> GuardrailSettingsOut:
    return _settings(previews.get_guardrail_settings(caller.tenant_id, session=session))


@router.put(
    "/v1/guardrail-settings",
    response_model=GuardrailSettingsOut,
    summary="Change the tenant's guardrail settings",
)
def put_guardrail_settings(
    body: GuardrailSettingsIn, caller: AdminCaller, session: SessionDep
) -> GuardrailSettingsOut:
    row = previews.set_high_cost_threshold(caller, body.high_cost_hour_amount, session=session)
    return _settings(row)


def _preview(row: CostPreview, caller: AuthContext) -> CostPreviewOut:
    return CostPreviewOut(
        id=row.id,
        app=row.app,
        team=row.team,
        cost_center=row.cost_center,
        hour_start=row.hour_start,
        hour_cost=row.hour_cost,
        threshold=row.threshold,
        currency=row.currency,
        alert_id=row.alert_id,
        created_at=row.created_at,
        preview=previews.preview_body(row, reader=caller),
    )


@router.get(
    "/v1/cost-previews",
    response_model=list[CostPreviewOut],
    summary="Preview invoices made after high-cost hours, newest first",
)
def get_cost_previews(
    caller: Reader,
    session: ReadSessionDep,
    app: Annotated[str | None, Query(description="Only previews of this app (its slug).")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.")] = 50,
) -> list[CostPreviewOut]:
    rows = previews.list_previews(caller, app=app, limit=limit, session=session)
    return [_preview(r, caller) for r in rows]


@router.get(
    "/v1/cost-previews/{preview_id}",
    response_model=CostPreviewOut,
    summary="One preview invoice made after a high-cost hour",
)
def get_cost_preview(preview_id: str, caller: Reader, session: ReadSessionDep) -> CostPreviewOut:
    return _preview(previews.get_preview(caller, preview_id, session=session), caller)
