"""Two admins revoking each other's key at the same moment must not both succeed: the second
revocation would leave the tenant without any usable admin key (docs/tenancy.md)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import datetime

import pytest
from sqlalchemy.orm import Session

from quartermaster.errors import ConflictError
from quartermaster.runtime import Runtime
from quartermaster.tenancy import service
from quartermaster.tenancy.models import ApiKey, Role
from quartermaster.tenancy.service import (
    KeyStatus,
    bootstrap_tenant,
    create_principal,
    issue_api_key,
    list_api_keys,
    revoke_api_key,
)

# How long a revocation that has run its last-admin-key check waits for the other one to run
# its own. Without serialisation both get there at once; with it the other one is blocked
# until this one commits, so the wait times out and the revocations run one after the other.
CHECK_RENDEZVOUS_SECONDS = 3.0


def test_admins_revoking_each_others_key_at_once_leave_one_usable_admin_key(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = f"race-{uuid.uuid4().hex[:10]}"
    with runtime.session_factory() as session:
        ann_key = bootstrap_tenant(tenant_id, admin_name="ann", session=session).key_id
        bob = create_principal(tenant_id, "bob", role=Role.ADMIN, session=session)
        bob_key = issue_api_key(bob, session=session).key_id

    checked = threading.Barrier(2, timeout=CHECK_RENDEZVOUS_SECONDS)
    unchecked = service._is_last_admin_key

    def check_then_wait(key: ApiKey, now: datetime, *, session: Session) -> bool:
        last = unchecked(key, now, session=session)
        # Both checks before either commits, unless they are serialised (then this times out).
        with contextlib.suppress(threading.BrokenBarrierError):
            checked.wait()
        return last

    monkeypatch.setattr(service, "_is_last_admin_key", check_then_wait)
    outcomes: dict[str, str] = {}

    def revoke(actor: str, key_id: str) -> None:
        with runtime.session_factory() as session:
            try:
                revoke_api_key(tenant_id, key_id, actor=f"principal:{actor}", session=session)
                outcomes[actor] = "revoked"
            except ConflictError as refused:
                outcomes[actor] = refused.message

    threads = [
        threading.Thread(target=revoke, args=("ann", bob_key)),
        threading.Thread(target=revoke, args=("bob", ann_key)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["ann", "bob"]
    results = list(outcomes.values())
    assert results.count("revoked") == 1, outcomes
    refusal = next(result for result in results if result != "revoked")
    assert "the tenant's last active admin key" in refusal, outcomes
    with runtime.session_factory() as session:
        keys = list_api_keys(tenant_id, session=session)
    assert sorted(key.status for key in keys) == [KeyStatus.ACTIVE, KeyStatus.REVOKED]
