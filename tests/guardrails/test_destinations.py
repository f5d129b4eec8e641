"""The webhook SSRF guard: URLs naming or resolving to loopback, private, link-local (cloud
metadata) and other non-public addresses are refused at creation (422 naming the URL and why)
and again before each delivery (DNS can change), unless private destinations are allowed."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from quartermaster.api.app import create_app
from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails import notifier
from quartermaster.guardrails.destinations import (
    Destination,
    DestinationRefused,
    check_destination,
    pin_destination,
    why_refused,
)
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.models import Delivery
from quartermaster.guardrails.notifier import DeliveryPolicy, deliver_due
from quartermaster.guardrails.webhook_post import post_within
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.service import bootstrap_tenant
from tests.conftest import TenantHandle, make_settings
from tests.guardrails.receiver import webhook_receiver
from tests.guardrails.support import FixedSpend, budget, build_world, ok


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.10.10", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fc00::5", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-public"),
        # IPv6 addresses carrying a non-public IPv4 one, which a gateway delivers to.
        ("64:ff9b::7f00:1", "a NAT64 address of 127.0.0.1, a loopback address"),
        ("64:ff9b::a9fe:a9fe", "a NAT64 address of 169.254.169.254, a cloud metadata"),
        ("64:ff9b:1::a00:1", "a local-use NAT64 address"),
        ("2002:7f00:1::", "a 6to4 address of 127.0.0.1, a loopback address"),
        ("2002:c0a8:101::1", "a 6to4 address of 192.168.1.1, a private address"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a Teredo address of 127.0.0.1, a loopback"),
        ("::7f00:1", "an IPv4-compatible address of 127.0.0.1, a loopback address"),
        ("::a00:5", "IPv4-compatible address of 10.0.0.5, a private address"),
    ],
)
def test_non_public_addresses_are_refused(address: str, why: str) -> None:
    reason = why_refused(ipaddress.ip_address(address))
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert why_refused(ipaddress.ip_address(address)) is None


def test_names_are_checked_by_what_they_resolve_to() -> None:
    def resolver(host: str, port: int) -> list[str]:
        return {"hooks.example.com": ["93.184.216.34"], "evil.example.com": ["10.0.0.7"]}.get(
            host, []
        )

    check_destination("https://hooks.example.com/x", allow_private=False, resolve=resolver)
    with pytest.raises(DestinationRefused) as refused:
        check_destination("https://evil.example.com/x", allow_private=False, resolve=resolver)
    text = str(refused.value)
    assert "'https://evil.example.com/...'" in text  # the path may be a credential
    assert "resolves to 10.0.0.7, a private address" in text
    # Unresolvable now: accepted (the delivery-time check covers it); allowed: no check at all.
    check_destination("https://nowhere.example.com/x", allow_private=False, resolve=resolver)
    check_destination("http://127.0.0.1:9/x", allow_private=True, resolve=resolver)
    with pytest.raises(DestinationRefused, match="'localhost' resolves to"):
        check_destination("http://localhost:8080/x", allow_private=False)


@pytest.fixture
def guarded(tmp_path: Path, db_url: str) -> Iterator[tuple[TestClient, Runtime]]:
    """An API whose settings keep the guard on (the shared fixtures turn it off)."""
    settings = make_settings(
        tmp_path / "qm", db_url, pipeline_enabled=False, webhook_allow_private=False
    )
    runtime = build_runtime(settings, migrate=False)
    try:
        with TestClient(create_app(settings, runtime=runtime)) as client:
            yield client, runtime
    finally:
        runtime.close()


def test_create_refuses_private_urls_naming_url_and_why(
    guarded: tuple[TestClient, Runtime],
) -> None:
    """The 422 names the URL as lists show it (up to its host: a path, query or userinfo
    may be the credential) and why."""
    client, runtime = guarded
    with runtime.session_factory() as session:
        issued = bootstrap_tenant(f"ssrf-{utc_now().timestamp():.0f}", session=session)
    headers = {"Authorization": f"Bearer {issued.token}"}
    for url, shown, why in [
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/...", "is a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.169.254/...",
            "is a cloud metadata address",
        ),
        ("http://[::1]/hook", "http://[::1]/...", "is a loopback address"),
        ("https://user:pw@10.0.0.5/x?token=T0K3N", "https://10.0.0.5/...", "is a private address"),
        ("http://localhost/hook", "http://localhost/...", "resolves to"),
        (
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::7f00:1]",
            "is a NAT64 address of 127.0.0.1, a loopback address",
        ),
        (
            "http://[2002:7f00:1::]/",
            "http://[2002:7f00:1::]",
            "is a 6to4 address of 127.0.0.1, a loopback address",
        ),
    ]:
        response = client.post("/v1/webhooks", json={"url": url}, headers=headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "url"
        assert f"url '{shown}'" in error["message"]
        for secret in ("/hook", "meta-data", "user", "pw@", "T0K3N"):
            assert secret not in error["message"]
        assert why in error["message"]
        assert "QM_WEBHOOK_ALLOW_PRIVATE" in error["message"]
    public = client.post("/v1/webhooks", json={"url": "https://93.184.216.34/h"}, headers=headers)
    assert public.status_code == 201, public.text
    assert len(ok(client.get("/v1/webhooks", headers=headers))) == 1


def test_delivery_rechecks_the_destination(
    client: TestClient,
    runtime: Runtime,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Created while allowed (or while the name resolved to a public address), then refused at
    delivery: the attempt is logged as refused and nothing reaches the receiver."""
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    with webhook_receiver() as receiver:
        ok(client.post("/v1/webhooks", json={"url": receiver.url}, headers=world.headers), 201)
        spend = FixedSpend()
        spend.set("tenant", "", "60")
        with runtime.session_factory() as session:
            evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=utc_now())
        policy = DeliveryPolicy(max_attempts=2, backoff_seconds=0.01, allow_private=False)
        with httpx.Client(timeout=5) as sender:
            result = deliver_due(
                runtime.session_factory, sender, server_key=runtime.server_key, policy=policy
            )
        assert result.retried == 1
        assert not receiver.requests
        with runtime.session_factory() as session:
            delivery = session.scalars(
                select(Delivery).where(Delivery.tenant_id == world.tenant.tenant_id)
            ).one()
        assert delivery.last_error is not None
        assert delivery.last_error.startswith("refused: url 'http://127.0.0.1:")
        assert "is a loopback address" in delivery.last_error
        attempts = ok(
            client.get(f"/v1/webhook-deliveries/{delivery.id}/attempts", headers=world.headers)
        )
        assert attempts[0]["status_code"] is None
        assert "refused" in attempts[0]["error"]
        # A name that now resolves to a public address is let through to the send.
        monkeypatch.setattr(
            notifier, "pin_destination", lambda url, allow_private: Destination(url)
        )
        delivery_policy = DeliveryPolicy(max_attempts=2, backoff_seconds=0.0, allow_private=False)
        with httpx.Client(timeout=5) as sender:
            again = deliver_due(
                runtime.session_factory,
                sender,
                server_key=runtime.server_key,
                policy=delivery_policy,
            )
        assert again.delivered == 1
        assert len(receiver.requests) == 1


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    return lambda host, port: table.get(host, [])


def test_a_delivery_connects_to_the_address_it_checked_under_the_name_it_was_given() -> None:
    resolve = _resolver(
        {
            "hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"],
            "bücher.example": ["2606:2800:220:1::2"],  # getaddrinfo encodes the name itself
            "mixed.example.com": ["93.184.216.34", "10.0.0.7"],
        }
    )
    plain = pin_destination("http://hooks.example.com/x?t=1", allow_private=False, resolve=resolve)
    assert plain == Destination(
        "http://93.184.216.34/x?t=1",
        "hooks.example.com",
        None,
        ("http://[2606:2800:220:1::1]/x?t=1",),  # tried if the first refuses to connect
    )
    tls = pin_destination("https://hooks.example.com:8443/x", allow_private=False, resolve=resolve)
    assert tls == Destination(
        "https://93.184.216.34:8443/x",
        "hooks.example.com:8443",
        "hooks.example.com",
        ("https://[2606:2800:220:1::1]:8443/x",),
    )
    idn = pin_destination("https://bücher.example/x", allow_private=False, resolve=resolve)
    assert idn == Destination(
        "https://[2606:2800:220:1::2]/x", "xn--bcher-kva.example", "xn--bcher-kva.example"
    )
    # An address literal is its own destination.
    assert pin_destination("https://93.184.216.34/x", allow_private=False, resolve=resolve) == (
        Destination("https://93.184.216.34/x")
    )
    # One non-public address among a name's refuses it, whichever the connection would take.
    with pytest.raises(DestinationRefused, match=r"resolves to 10\.0\.0\.7, a private address"):
        pin_destination("https://mixed.example.com/x", allow_private=False, resolve=resolve)
    with pytest.raises(DestinationRefused, match=r"host 'nowhere\.example\.com' does not resolve"):
        pin_destination("https://nowhere.example.com/x", allow_private=False, resolve=resolve)
    # Private destinations allowed: still pinned, so check and connection agree.
    allowed = pin_destination("https://mixed.example.com/x", allow_private=True, resolve=resolve)
    assert allowed.url == "https://93.184.216.34/x"


def test_a_pinned_post_reaches_the_address_with_the_names_host_header() -> None:
    with webhook_receiver() as receiver:
        port = httpx.URL(receiver.url).port
        name = f"hooks.example.com:{port}"
        with httpx.Client(timeout=5) as client:
            outcome = post_within(
                client,
                f"http://hooks.example.com:{port}/in",
                body=b"{}",
                headers={"Content-Type": "application/json"},
                timeout_seconds=5,
                destination=lambda: Destination(f"http://127.0.0.1:{port}/in", name, None),
            )
        assert outcome.error is None, outcome.error
        (received,) = receiver.requests
        assert received.headers["Host"] == name
        assert received.path == "/in"


def test_an_address_that_refuses_the_connection_falls_back_to_the_next_checked_one() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refusing = closed.getsockname()[1]  # bound, never listening: connections are refused
        with webhook_receiver() as receiver, httpx.Client(timeout=5) as client:
            outcome = post_within(
                client,
                "http://hooks.example.com/in",
                body=b"{}",
                headers={},
                timeout_seconds=5,
                destination=lambda: Destination(
                    f"http://127.0.0.1:{refusing}/in",
                    "hooks.example.com",
                    None,
                    (f"{receiver.url.rstrip('/')}/in",),
                ),
            )
            assert outcome.error is None, outcome.error
            assert len(receiver.requests) == 1


def test_a_tls_destination_is_verified_for_its_name_not_its_address() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        outcome = post_within(
            client,
            "https://hooks.example.com/in",
            body=b"{}",
            headers={},
            timeout_seconds=5,
            destination=lambda: Destination(
                "https://93.184.216.34/in", "hooks.example.com", "hooks.example.com"
            ),
        )
    assert outcome.error is None
    (request,) = seen
    assert request.url == "https://93.184.216.34/in"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


def test_a_resolver_that_hangs_is_cut_off_at_the_attempts_deadline() -> None:
    started = time.monotonic()

    def hanging() -> Destination:
        time.sleep(3)
        raise AssertionError("the attempt should have ended at its deadline")

    with httpx.Client(timeout=5) as client:
        outcome = post_within(
            client,
            "https://slow-dns.example.com/in",
            body=b"{}",
            headers={},
            timeout_seconds=0.5,
            destination=hanging,
        )
    assert outcome.error == "Timeout: no complete answer within 0.5 s"
    assert time.monotonic() - started < 2
