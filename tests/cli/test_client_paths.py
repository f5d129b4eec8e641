"""An id or secret path typed on the command line reaches the route it names, and no other."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quartermaster.cli import client
from quartermaster.cli.billing import bill_app
from quartermaster.cli.client import secret_route, segment
from quartermaster.cli.secrets import secret_app
from quartermaster.cli.tenancy import key_app


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The requests the CLI sends, answered 204 by a transport in memory."""
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(204)

    def fake_client(**_: Any) -> httpx.Client:
        return httpx.Client(base_url="http://qm.test", transport=httpx.MockTransport(answer))

    monkeypatch.setattr(client, "api_client", fake_client)
    return requests


def test_an_id_with_dot_segments_stays_one_segment_of_its_own_route(
    sent: list[httpx.Request],
) -> None:
    result = CliRunner().invoke(bill_app, ["discard", "../../keys/0123456789abcdef"])
    assert result.exit_code == 0, result.output
    [request] = sent
    assert request.method == "DELETE"
    # Before: httpx resolved the dot segments and sent DELETE /v1/keys/0123456789abcdef.
    assert request.url.raw_path == b"/v1/billing/runs/..%2F..%2Fkeys%2F0123456789abcdef"


@pytest.mark.parametrize("key_id", ["..", "."])
def test_a_dot_id_is_refused_before_any_request(sent: list[httpx.Request], key_id: str) -> None:
    result = CliRunner().invoke(key_app, ["revoke", key_id])
    assert result.exit_code == 1
    assert f"id {key_id!r} is not valid" in result.output
    assert sent == []


def test_a_secret_path_with_a_dot_dot_segment_is_refused(sent: list[httpx.Request]) -> None:
    result = CliRunner().invoke(secret_app, ["destroy", "apps/shop/../../teams/web/db", "--yes"])
    assert result.exit_code == 1
    assert "'..' segments are not allowed" in " ".join(result.output.split())
    assert sent == []


def test_query_and_fragment_characters_stay_in_the_id() -> None:
    assert segment("run?lines=false#x") == "run%3Flines%3Dfalse%23x"
    assert secret_route("/apps/shop/db password/") == "apps/shop/db%20password"


def test_request_refuses_a_route_with_a_dot_segment_left_in_it(
    sent: list[httpx.Request],
) -> None:
    with pytest.raises(SystemExit):
        client.request("GET", "/v1/apps/../keys", url=None, api_key=None)
    assert sent == []
