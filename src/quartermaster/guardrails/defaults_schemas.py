"""HTTP bodies of default caps, the tenant's guardrail settings and cost previews."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from quartermaster.api.params import one_of
from quartermaster.domain.money import WrittenDecimal
from quartermaster.guardrails.budgets import BudgetPeriod
from quartermaster.guardrails.caps import CAP_ACTIONS, CapTarget

CapTargetName = Annotated[str, one_of(CapTarget)]
CapPeriodName = Annotated[str, one_of(BudgetPeriod)]
CapActionName = Annotated[str, one_of(CAP_ACTIONS)]


class DefaultCapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    applies_to: CapTargetName = Field(description="ephemeral | non_production")
    amount: WrittenDecimal = Field(description="Hard cap per app and period, in `currency`.")
    currency: str | None = Field(
        default=None,
        description="The amount's currency (ISO 4217); default: the default price book's. "
        "Spend priced in another currency is not compared with it.",
    )
    period: CapPeriodName = Field(default="month", description="month | day (tenant time zone)")
    action: CapActionName = Field(default="halt", description="throttle | halt")


class DefaultCapOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    applies_to: CapTargetName
    amount: Decimal
    amount_currency: str | None = Field(
        description="The amount's currency; null: set before caps had one (the default price "
        "book's, whatever it is)."
    )
    period: CapPeriodName
    action: CapActionName
    created_by: str
    created_at: datetime


class GuardrailSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    high_cost_hour_amount: WrittenDecimal | None = Field(
        description="An app's cost in one hour at which a preview invoice is made; null: off."
    )


class GuardrailSettingsOut(BaseModel):
    high_cost_hour_amount: Decimal | None
    updated_by: str | None
    updated_at: datetime | None


class CostPreviewOut(BaseModel):
    id: str
    app: str
    team: str | None
    cost_center: str
    hour_start: datetime
    hour_cost: Decimal
    threshold: Decimal
    currency: str
    alert_id: str | None
    created_at: datetime
    preview: dict[str, Any] = Field(
        description="Month to date and forecast of the app, its team and the tenant; the "
        "meters and top events behind the hour."
    )
