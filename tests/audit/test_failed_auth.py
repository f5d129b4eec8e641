"""Failed authentications: bounded per tenant and minute; unverified text escaped and cut."""

from __future__ import annotations

from quartermaster.audit.failed_auth import Admission, FailedAuthLimiter, untrusted_text


def test_untrusted_text_escapes_control_characters_and_is_bounded() -> None:
    assert untrusted_text("app:web") == "app:web"
    assert untrusted_text("admin\nFAKE\x1b[31m\u202e") == "admin\\nFAKE\\x1b[31m\\u202e"
    cut = untrusted_text("x" * 5000)
    assert len(cut) == 64
    assert cut.endswith("…")


def test_limiter_admits_n_per_tenant_per_window_then_reports_the_rest() -> None:
    now = [0.0]
    limiter = FailedAuthLimiter(2, window_seconds=60, clock=lambda: now[0])
    got = [limiter.admit("acme") for _ in range(5)]
    assert got == [Admission(True, 0)] * 2 + [Admission(False, 0)] * 3
    assert limiter.admit("globex") == Admission(True, 0)  # each tenant has its own
    now[0] = 59.9
    assert limiter.admit("acme") == Admission(False, 0)
    now[0] = 60.0
    assert limiter.admit("acme") == Admission(True, 4)
    assert limiter.admit("acme") == Admission(True, 0)
