from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from quartermaster.bus.protocol import LogRecord
from quartermaster.domain.frozen import fast_constructor
from quartermaster.usage.attribution import Attribution, Method, Outcome
from quartermaster.usage.meters import Measurement

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (
            LogRecord,
            (
                "t",
                "app://bot",
                "e1",
                "qm.invocation.usage",
                None,
                NOW,
                NOW,
                "h",
                "bot",
                None,
                True,
                "{}",
            ),
        ),
        (Attribution, (Outcome.ATTRIBUTED, NOW, Method.APP_ID, "cc", "team", "app", "", "", NOW)),
        (Measurement, ("tokens", 3, None)),
    ],
)
def test_the_fast_constructor_builds_what_the_dataclass_builds(
    cls: type, values: tuple[object, ...]
) -> None:
    built = fast_constructor(cls)(*values)
    assert type(built) is cls
    assert built == cls(*values)
    assert dataclasses.astuple(built) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, dataclasses.fields(cls)[0].name, None)
    with pytest.raises(TypeError):
        fast_constructor(cls)(*values[:-1])  # every field, in order
