"""The kinds of alert: every one raised is one `GET /v1/alerts?kind=` accepts."""

from __future__ import annotations

from quartermaster.guardrails.alerts import ALERT_KINDS
from quartermaster.guardrails.anomaly_scan import ANOMALY_KIND
from quartermaster.guardrails.late_usage import LATE_USAGE_KIND
from quartermaster.guardrails.previews import HIGH_COST_KIND


def test_every_kind_of_alert_raised_is_one_a_list_can_filter_by() -> None:
    assert {
        ANOMALY_KIND,
        HIGH_COST_KIND,
        LATE_USAGE_KIND,
        "budget_threshold",
        "default_cap",
    } == set(ALERT_KINDS)
