"""How `qm alerts deliveries` and `enforcements` lay out the API's rows (HTTP: tests/guardrails)."""

from __future__ import annotations

from unittest import mock

import pytest

from quartermaster.cli import guardrails as guardrails_cli


def test_a_delivery_shows_both_ids_whole_and_its_status_over_its_attempts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    delivery, webhook = "a" * 32, "b" * 32
    rows = [
        {
            "id": delivery,
            "webhook_id": webhook,
            "status": "pending",
            "attempts": 1,
            "next_attempt_at": "2026-12-03T11:40:15.163Z",
            "last_error": "connection refused",
        }
    ]
    with mock.patch.object(guardrails_cli, "_read_pages", return_value=(rows, None)):
        guardrails_cli.delivery_list(status=None, limit=5, url=None, api_key=None)
    cells = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("│")
    ]
    assert [row[:2] for row in cells] == [[delivery, "pending"], [webhook, "1 attempt"]]
    # The rest folds around the ids at 80 columns, at spaces.
    assert " ".join(row[2] for row in cells).split() == ["2026-12-03", "11:40:15Z"]
    assert " ".join(row[3] for row in cells).split() == ["connection", "refused"]
    # A dead (or delivered) delivery has no next attempt: the column stays empty.
    dead = [rows[0] | {"status": "dead"}]
    with mock.patch.object(guardrails_cli, "_read_pages", return_value=(dead, None)):
        guardrails_cli.delivery_list(status=None, limit=5, url=None, api_key=None)
    cells = [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("│")
    ]
    assert [row[:2] for row in cells] == [[delivery, "dead"], [webhook, "1 attempt"]]
    assert " ".join(row[2] for row in cells).split() == []
    with mock.patch.object(guardrails_cli, "_read_pages", return_value=([], None)):
        guardrails_cli.delivery_list(status=None, limit=5, url=None, api_key=None)
    assert capsys.readouterr().out.strip() == "no deliveries"


def test_an_enforcement_reads_as_in_force_ended_or_lifted() -> None:
    one = {"lifted_at": None, "lifted_by": None, "ends_at": "2999-01-01T00:00:00Z"}
    assert guardrails_cli._enforcement_state(one) == "in force until\n2999-01-01 00:00:00Z"
    ended = one | {"ends_at": "2020-01-01T00:00:00Z"}
    assert guardrails_cli._enforcement_state(ended) == "ended\n2020-01-01 00:00:00Z"
    lifted = ended | {"lifted_at": "2019-12-31T10:00:00.5Z", "lifted_by": "dana"}
    assert guardrails_cli._enforcement_state(lifted) == "lifted by dana\n2019-12-31 10:00:00Z"
