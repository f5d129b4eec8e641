"""Redaction of leased values from text streams, whatever the chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quartermaster.runtime import Runtime
from quartermaster.secrets import kv, revocation
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.exposure import leased_values, redactor_for
from quartermaster.secrets.redaction import REPLACEMENT, Redactor, redact
from tests.secrets.conftest import World


def _chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(text[last:point])
        last = point
    pieces.append(text[last:])
    return pieces


def _run(redactor: Redactor, chunks: list[str]) -> str:
    return "".join(redactor.stream(chunks))


def test_a_secret_split_across_every_boundary_is_redacted() -> None:
    secret = "s3cr3t-T0KEN"
    text = f"start {secret} middle {secret}end"
    for cut in range(len(text) + 1):
        out = _run(Redactor([secret]), [text[:cut], text[cut:]])
        assert out == f"start {REPLACEMENT} middle {REPLACEMENT}end", cut
    one_char_chunks = _run(Redactor([secret]), list(text))
    assert secret not in one_char_chunks
    assert one_char_chunks == redact(text, [secret])


def test_overlapping_and_nested_secrets() -> None:
    values = ["abcd-efgh", "efgh-ijkl", "cd-e"]
    assert redact("xxabcd-efgh-ijklyy", values) == f"xx{REPLACEMENT}-ijklyy"
    assert redact("zz cd-e zz", values) == f"zz {REPLACEMENT} zz"


def test_nothing_is_held_back_without_secrets_and_short_values_are_ignored() -> None:
    redactor = Redactor(["ok", ""])
    assert redactor.secret_count == 0
    assert redactor.feed("all ok here") == "all ok here"


def test_output_is_emitted_progressively() -> None:
    redactor = Redactor(["0123456789"])
    emitted = redactor.feed("a" * 100)
    assert len(emitted) >= 91  # at most longest-1 characters held back
    assert redactor.flush() == "a" * (100 - len(emitted))


@settings(max_examples=300, deadline=None)
@given(
    secrets=st.lists(st.text(alphabet="abc-1", min_size=4, max_size=9), min_size=1, max_size=3),
    filler=st.lists(st.text(alphabet="abc-1 \n", max_size=12), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=8),
)
def test_chunked_equals_whole(secrets: list[str], filler: list[str], cuts: list[int]) -> None:
    text = "".join(f + secrets[i % len(secrets)] for i, f in enumerate(filler))
    whole = redact(text, secrets)
    assert _run(Redactor(secrets), _chunked(text, cuts)) == whole
    for secret in secrets:
        assert secret not in whole


def test_redactor_holds_the_values_of_live_leases_only(
    world: World, ctx: SecretsContext, runtime: Runtime
) -> None:
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, "apps/billing/a", "alpha-secret-1", ctx=ctx, session=session)
        kv.write_secret(admin, "apps/billing/b", "bravo-secret-2", ctx=ctx, session=session)
        kv.write_secret(admin, "apps/web/c", "charlie-secret-3", ctx=ctx, session=session)
        assert leased_values(world.tenant_id, ctx=ctx, session=session) == []
        lease_a = kv.read_secret(admin, "apps/billing/a", ctx=ctx, session=session).lease
        kv.read_secret(admin, "apps/web/c", ctx=ctx, session=session)
        kv.read_secret(admin, "apps/billing/b", ctx=ctx, session=session)
        revocation.revoke_lease(admin, lease_a.id, ctx=ctx, session=session)
        everything = leased_values(world.tenant_id, ctx=ctx, session=session)
        billing = leased_values(world.tenant_id, prefix="apps/billing", ctx=ctx, session=session)
        redactor = redactor_for(admin, prefix="", ctx=ctx, session=session)
    assert everything == ["bravo-secret-2", "charlie-secret-3"]
    assert billing == ["bravo-secret-2"]
    log = "alpha-secret-1 bravo-secr" + "et-2 charlie-secret-3"
    out = redactor.feed(log[:20]) + redactor.feed(log[20:]) + redactor.flush()
    assert out == f"alpha-secret-1 {REPLACEMENT} {REPLACEMENT}"
