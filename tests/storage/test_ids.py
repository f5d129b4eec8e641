"""Ids by unique prefix (storage/ids.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from quartermaster.errors import InvalidInputError
from quartermaster.runtime import Runtime
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.tenancy.models import Tenant


def test_an_id_or_a_unique_prefix_of_8_names_its_row(runtime: Runtime) -> None:
    ids = ["ab12cd34ef56aa00", "ab12cd34ef56bb00", "ab12cd35ef560000"]
    with runtime.session_factory() as session:
        session.add_all(Tenant(id=one, name=one) for one in ids)
        session.commit()
        query = select(Tenant).where(Tenant.id.in_(ids))

        def find(given: str) -> str | None:
            row = by_id_or_prefix(
                query, Tenant.id, given, what="tenant", field="id", session=session
            )
            return row.id if row is not None else None

        assert find("ab12cd34ef56aa00") == "ab12cd34ef56aa00"  # whole
        assert find("ab12cd35") == "ab12cd35ef560000"  # 8 characters, one row
        with pytest.raises(InvalidInputError, match="'ab12cd3' is too short: give 8"):
            find("ab12cd3")  # a prefix, but under 8 characters
        assert find("ab1") is None  # not a prefix: only a whole id
        assert find("ab12cd99") is None
        with pytest.raises(InvalidInputError, match="'ab12cd34' is ambiguous"):
            find("ab12cd34")  # two rows begin with it
        assert find("ab12cd34ef56b") == "ab12cd34ef56bb00"
