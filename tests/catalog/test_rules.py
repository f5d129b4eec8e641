"""The catalog's pure rules: interval overlap, dated ownership changes, who may do what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartermaster.catalog.access import (
    ensure_may_read,
    ensure_may_reassign,
    ensure_may_write,
    visible_team,
)
from quartermaster.catalog.resources import ResourceSpan, first_overlap, overlaps
from quartermaster.catalog.service import plan_ownership_change
from quartermaster.errors import InvalidInputError, PermissionDeniedError
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext, KeyStatus, key_status

BASE = datetime(2025, 1, 1, tzinfo=UTC)
# Small integer grids make brute force over every instant exact.
points = st.integers(min_value=0, max_value=20)


def at(step: int) -> datetime:
    return BASE + timedelta(seconds=step)


def interval(draw_start: int, length: int | None) -> tuple[datetime, datetime | None]:
    return at(draw_start), None if length is None else at(draw_start + length)


def contains(start: datetime, end: datetime | None, moment: datetime) -> bool:
    return start <= moment and (end is None or moment < end)


@given(points, st.none() | st.integers(1, 10), points, st.none() | st.integers(1, 10))
def test_overlap_means_sharing_an_instant(
    a0: int, alen: int | None, b0: int, blen: int | None
) -> None:
    a_from, a_to = interval(a0, alen)
    b_from, b_to = interval(b0, blen)
    shared = any(
        contains(a_from, a_to, at(step)) and contains(b_from, b_to, at(step)) for step in range(40)
    )
    assert overlaps(a_from, a_to, b_from, b_to) is shared
    assert overlaps(b_from, b_to, a_from, a_to) is shared


def test_adjacent_half_open_intervals_do_not_overlap() -> None:
    assert not overlaps(at(0), at(5), at(5), None)
    assert overlaps(at(0), None, at(100), at(101))
    spans = [
        ResourceSpan("r", "a", None, at(0), at(5), None),
        ResourceSpan("r", "b", None, at(5), at(9), None),
    ]
    assert first_overlap(at(9), None, spans) is None
    found = first_overlap(at(4), at(6), spans)
    assert found is not None
    assert found.app_id == "a"


@given(points, points, points)
def test_ownership_changes_never_rewrite_closed_history_or_the_future(
    current: int, effective: int, now: int
) -> None:
    args = {"current_from": at(current), "effective_at": at(effective), "now": at(now)}
    if effective < current or effective > now:
        with pytest.raises(InvalidInputError) as refused:
            plan_ownership_change(**args)
        assert refused.value.field == "effective_at"
    else:
        expected = "replace" if effective == current else "split"
        assert plan_ownership_change(**args) == expected


def caller(role: Role, team_id: str | None = None) -> AuthContext:
    return AuthContext(
        tenant_id="t",
        principal_id="p",
        principal_name="n",
        role=role,
        team_id=team_id,
        app_slug=None,
    )


def test_access_rules_by_role() -> None:
    admin, finance = caller(Role.ADMIN), caller(Role.FINANCE)
    member, app = caller(Role.TEAM_MEMBER, "team-1"), caller(Role.APP)
    assert visible_team(admin) is None
    assert visible_team(finance) is None
    assert visible_team(member) == "team-1"
    assert visible_team(caller(Role.TEAM_MEMBER)) == ""  # no team: sees nothing
    with pytest.raises(PermissionDeniedError, match="role 'app' may not read"):
        visible_team(app)

    ensure_may_read(member, team_id="team-1", what="x")
    with pytest.raises(PermissionDeniedError, match="may only read its own team's"):
        ensure_may_read(member, team_id="team-2", what="x")
    ensure_may_write(admin, team_id="team-2", what="x")
    ensure_may_write(member, team_id="team-1", what="x")
    for refused, team in ((member, "team-2"), (finance, "team-1"), (app, "team-1")):
        with pytest.raises(PermissionDeniedError):
            ensure_may_write(refused, team_id=team, what="x")
    ensure_may_reassign(admin)
    with pytest.raises(PermissionDeniedError, match="only admin may"):
        ensure_may_reassign(member)


def test_key_status() -> None:
    now = BASE
    assert key_status(revoked_at=None, expires_at=None, now=now) is KeyStatus.ACTIVE
    assert key_status(revoked_at=None, expires_at=now + timedelta(1), now=now) is KeyStatus.ACTIVE
    assert key_status(revoked_at=None, expires_at=now, now=now) is KeyStatus.EXPIRED
    revoked = key_status(revoked_at=now, expires_at=now - timedelta(1), now=now)
    assert revoked is KeyStatus.REVOKED
