"""docs/events.md stays the contract: every type, field and reason is documented, and the
signing example runs and agrees with the server's implementation."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from quartermaster.domain.events import DATA_MODELS, CloudEvent
from quartermaster.metering.signing import sign_event, verify_signature
from quartermaster.metering.validation import RejectReason

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def section(title_prefix: str) -> str:
    text = DOC.read_text()
    start = text.index(title_prefix)
    following = re.search(r"\n#{2,3} ", text[start + len(title_prefix) :])
    end = start + len(title_prefix) + following.start() if following else len(text)
    return text[start:end]


@pytest.mark.parametrize("event_type", sorted(DATA_MODELS))
def test_every_field_of_every_type_is_documented(event_type: str) -> None:
    body = section(f"### `{event_type}`")
    for name, field in DATA_MODELS[event_type].model_fields.items():
        row = next((line for line in body.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{event_type}.{name} is not in docs/events.md"
        required = row.split("|")[3].strip()
        assert required.startswith("yes") == field.is_required(), row


def test_every_envelope_attribute_is_documented() -> None:
    body = section("## Envelope")
    for name in CloudEvent.model_fields:
        assert f"| `{name}` |" in body, name


def test_every_rejection_reason_is_documented() -> None:
    body = section("## Rejection reasons")
    documented = re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.MULTILINE)
    assert sorted(documented) == sorted(reason.value for reason in RejectReason)
    assert len(documented) == len(set(documented))


def test_the_signing_example_runs_and_matches_sign_event() -> None:
    text = DOC.read_text()
    code = text.split("<!-- signing-example -->\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "docs/events.md", "exec"), namespace)
    event = namespace["event"]
    secret = namespace["secret"]
    assert isinstance(event, dict)
    assert isinstance(secret, bytes)
    expected = sign_event(event, key_id=event["qmkeyid"], secret=secret)["qmsignature"]
    assert output.getvalue().strip() == expected
    assert verify_signature(event, secret=secret)
