"""Loading price books: every bad field is reported with its path."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import yaml

from quartermaster.pricing.loader import (
    PriceBookError,
    canonical_json,
    content_hash,
    document_from_json,
    format_for_content_type,
    guess_format,
    parse_price_book,
    validate_document,
)
from tests.pricing.support import EXAMPLE


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "internal",
        "currency": "USD",
        "version": 1,
        "effective_from": "2026-01-01T00:00:00Z",
        "prices": [
            {"meter": "invocations", "model": "per_unit", "unit_price": "0.0001"},
            {"meter": "tokens", "model": "per_unit", "unit_price": "0.002"},
            {"meter": "cpu_seconds", "model": "per_unit", "unit_price": "0.00003"},
            {
                "meter": "storage_gb_days",
                "model": "graduated",
                "tiers": [
                    {"up_to": 1000, "unit_price": "0.00"},
                    {"up_to": 5000, "unit_price": "0.002"},
                    {"unit_price": "0.001"},
                ],
            },
        ],
    }
    data.update(changes)
    return data


def issues_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(PriceBookError) as caught:
        validate_document(data)
    return caught.value.issues


DROP = object()


def with_rule(index: int, **fields: Any) -> dict[str, Any]:
    """The base document with prices[index] changed (a field given as DROP is removed)."""
    data = base()
    merged = {**data["prices"][index], **fields}
    data["prices"][index] = {key: value for key, value in merged.items() if value is not DROP}
    return data


def test_the_example_loads() -> None:
    document = parse_price_book(EXAMPLE.read_text(), "yaml")
    assert document.name == "internal-platform"
    assert {rule.model for rule in document.prices} == {
        "per_unit",
        "graduated",
        "volume",
        "package",
        "subscription",
    }
    assert {policy.method for policy in document.platform_costs} == {
        "direct",
        "proportional",
        "even",
        "floor_plus_share",
        "hybrid",
    }


def test_tier_order_error_names_the_tier() -> None:
    tiers = [
        {"up_to": 1000, "unit_price": "0.00"},
        {"up_to": 800, "unit_price": "0.002"},
        {"unit_price": "0.001"},
    ]
    assert issues_of(with_rule(3, tiers=tiers)) == [
        ("prices[3].tiers[1].up_to", "must be greater than the previous tier (1000)")
    ]


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (with_rule(1, colour="red"), "prices[1].colour", "unknown field"),
        (with_rule(1, unit_price=None), "prices[1].unit_price", "decimal"),
        (with_rule(1, unit_price="-1"), "prices[1].unit_price", "greater than or equal to 0"),
        (with_rule(1, unit_price="abc"), "prices[1].unit_price", "decimal"),
        (with_rule(1, model="tiered"), "prices[1].model", "'tiered' is not one of per_unit"),
        (with_rule(1, meter="Tokens!"), "prices[1].meter", "should match pattern"),
        (with_rule(1, pool="galaxy"), "prices[1].pool", "'app', 'team', 'cost_center'"),
        (with_rule(1, scope={"team": "a", "app": "b"}), "prices[1].scope", "exactly one"),
        (with_rule(1, scope={}), "prices[1].scope", "exactly one"),
        (with_rule(1, scope={"squad": "a"}), "prices[1].scope.squad", "unknown field"),
        (with_rule(1, free_allowance="-5"), "prices[1].free_allowance", "greater than or equal"),
        (
            with_rule(3, tiers=[{"up_to": 1, "unit_price": 1}, {"up_to": 2, "unit_price": 1}]),
            "prices[3].tiers[1].up_to",
            "the last tier must be unbounded",
        ),
        (
            with_rule(3, tiers=[{"unit_price": 1}, {"unit_price": 2}]),
            "prices[3].tiers[0].up_to",
            "only the last tier may be unbounded",
        ),
        (with_rule(3, tiers=[]), "prices[3].tiers", "at least 1 item"),
        (
            with_rule(3, tiers=[{"up_to": 0, "unit_price": 1}]),
            "prices[3].tiers[0].up_to",
            "greater than 0",
        ),
        (
            with_rule(0, model="package", package_size=0, package_price=1, unit_price=DROP),
            "prices[0].package_size",
            "greater than 0",
        ),
        (
            with_rule(
                0,
                model="subscription",
                fee=5,
                unit_price=DROP,
                overage={"model": "volume", "tiers": [{"up_to": 5, "unit_price": 1}]},
            ),
            "prices[0].overage.tiers[0].up_to",
            "the last tier must be unbounded",
        ),
        (
            with_rule(0, model="subscription", fee=5, unit_price=DROP, free_allowance=3),
            "prices[0].free_allowance",
            "unknown field",
        ),
        (base(currency="usd"), "currency", "should match pattern"),
        (base(version=0), "version", "greater than or equal to 1"),
        (
            base(effective_from="2026-01-01T00:00:00"),
            "effective_from",
            "'2026-01-01T00:00:00' is not an RFC 3339 timestamp with a UTC offset",
        ),
        (
            base(effective_from="yesterday"),
            "effective_from",
            "'yesterday' is not an RFC 3339 timestamp with a UTC offset",
        ),
        (base(prices=[]), "prices", "at least 1 item"),
        (base(surprise=1), "surprise", "unknown field"),
        (
            base(discounts=[{"name": "d", "percent": 120, "applies_to": {"team": "x"}}]),
            "discounts[0].percent",
            "less than or equal to 100",
        ),
        (
            base(discounts=[{"name": "d", "percent": 10, "applies_to": {"lifecycle": "spot"}}]),
            "discounts[0].applies_to.lifecycle",
            "'ephemeral' or 'persistent'",
        ),
        (
            base(
                discounts=[
                    {"name": "d", "percent": 10, "applies_to": {"team": "x"}, "meters": ["gpu"]}
                ]
            ),
            "discounts[0].meters[0]",
            "no price rule for meter 'gpu'",
        ),
        (
            base(platform_costs=[{"cost_type": "lb", "method": "proportional"}]),
            "platform_costs[0].meter",
            "required",
        ),
        (
            base(platform_costs=[{"cost_type": "lb", "method": "even", "meter": "requests"}]),
            "platform_costs[0].meter",
            "unknown field",
        ),
        (
            base(platform_costs=[{"cost_type": "lb", "method": "round_robin"}]),
            "platform_costs[0].method",
            "'round_robin' is not one of direct, proportional, even, floor_plus_share, hybrid",
        ),
        (
            base(platform_costs=[{"cost_type": "lb"}]),
            "platform_costs[0].method",
            "required (one of direct",
        ),
        (
            base(
                platform_costs=[
                    {
                        "cost_type": "cdn",
                        "method": "hybrid",
                        "meter": "requests",
                        "proportional_share": "1.5",
                    }
                ]
            ),
            "platform_costs[0].proportional_share",
            "less than or equal to 1",
        ),
        (
            base(
                platform_costs=[
                    {"cost_type": "x", "method": "direct", "to": {"lifecycle": "ephemeral"}}
                ]
            ),
            "platform_costs[0].to.lifecycle",
            "a direct target is a team, an app or a cost center",
        ),
        (
            base(
                platform_costs=[
                    {"cost_type": "lb", "method": "even"},
                    {"cost_type": "lb", "method": "even"},
                ]
            ),
            "platform_costs[1].cost_type",
            "duplicate policy for cost_type 'lb'",
        ),
        (
            base(reservations=[{"name": "r", "meter": "gpu_hours", "credit": 5}]),
            "reservations[0].meter",
            "no price rule for meter 'gpu_hours'",
        ),
        (
            base(reservations=[{"name": "r", "meter": "tokens", "credit": 0}]),
            "reservations[0].credit",
            "greater than 0",
        ),
    ],
)
def test_each_bad_field_is_named(data: dict[str, Any], path: str, message: str) -> None:
    found = issues_of(data)
    assert any(p == path and message in m for p, m in found), found


@pytest.mark.parametrize(
    ("overage", "message"),
    [
        (
            {"model": "subscription", "fee": 1, "included": 5},
            "'subscription' is not one of per_unit, graduated, volume, package",
        ),
        ({"unit_price": 1}, "required (one of per_unit, graduated, volume, package)"),
    ],
)
def test_an_overage_model_error_lists_the_four_usage_models(
    overage: dict[str, Any], message: str
) -> None:
    """The overage may be any of the four usage models: the message listed `subscription`,
    the very value it refused, as allowed."""
    data = with_rule(0, model="subscription", fee=1, included=10, unit_price=DROP, overage=overage)
    assert ("prices[0].overage.model", message) in issues_of(data)


def test_duplicate_rule_names_both_places() -> None:
    data = base()
    data["prices"].append({"meter": "tokens", "model": "per_unit", "unit_price": "1"})
    assert issues_of(data) == [
        ("prices[4]", "duplicate rule for meter 'tokens' with scope default (already at prices[1])")
    ]


def test_all_structural_errors_are_reported_together() -> None:
    data = base(currency="usd", version=0)
    data["prices"][1]["colour"] = "red"
    paths = [path for path, _ in issues_of(data)]
    assert paths == ["currency", "version", "prices[1].colour"]


def test_rules_between_fields_are_reported_with_the_bad_fields() -> None:
    """Six bad fields and three broken rules between fields come in one answer, in document
    order; the rules used to be checked only once every field was valid."""
    data = base(currency="usd", version=0)
    data["prices"][0]["unit_price"] = "-1"  # bad field
    data["prices"][1]["scope"] = {"team": "web", "app": "shop"}  # two owners
    data["prices"][2]["colour"] = "red"  # bad field
    data["prices"][3]["tiers"][1]["up_to"] = 800  # tier order
    data["discounts"] = [{"name": "d", "percent": 200, "applies_to": {"team": "web"}}]
    data["reservations"] = [
        {"name": "r", "meter": "gpu_hours", "credit": 5},  # no price rule
        {"name": "r2", "meter": "tokens", "credit": 0},  # bad field
    ]
    assert [path for path, _ in issues_of(data)] == [
        "currency",
        "version",
        "prices[0].unit_price",
        "prices[1].scope",
        "prices[2].colour",
        "prices[3].tiers[1].up_to",
        "discounts[0].percent",
        "reservations[0].meter",
        "reservations[1].credit",
    ]


def test_rules_between_fields_on_invalid_parts_are_left_to_the_field_errors() -> None:
    # A rule that is itself invalid is not checked further; without a list of prices, which
    # meters are priced is unknown, so a reservation's meter is not reported as unpriced.
    data = base(prices="tokens", reservations=[{"name": "r", "meter": "gpu_hours", "credit": 5}])
    assert issues_of(data) == [("prices", "input should be a valid list")]
    bad_rule = with_rule(3, colour="red", tiers=[{"up_to": 5, "unit_price": 1}])
    assert [path for path, _ in issues_of(bad_rule)] == ["prices[3].colour"]
    # A reservation's meter priced by a rule with a bad field is priced.
    priced_by_bad = with_rule(1, colour="red")
    priced_by_bad["reservations"] = [{"name": "r", "meter": "tokens", "credit": 5}]
    assert [path for path, _ in issues_of(priced_by_bad)] == ["prices[1].colour"]


def test_error_message_lists_paths_and_field_is_the_first() -> None:
    with pytest.raises(PriceBookError) as caught:
        validate_document(base(currency="usd", version=0))
    assert caught.value.field == "currency"
    assert caught.value.message.startswith("invalid price book: currency: string should match")
    assert "; version: input should be greater than or equal to 1" in caught.value.message


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("name: [unclosed", "yaml", "not valid YAML: line 1, column"),
        ('{"name": "x",}', "json", "not valid JSON: line 1, column 14"),
        ("- a\n- b\n", "yaml", "must be a mapping of fields, got list"),
        ("", "yaml", "must be a mapping of fields, got nothing"),
        ("x: !!python/object:os.system ls", "yaml", "not valid YAML"),
    ],
)
def test_unparseable_documents(text: str, fmt: str, message: str) -> None:
    with pytest.raises(PriceBookError) as caught:
        parse_price_book(text, fmt)  # type: ignore[arg-type]
    assert caught.value.issues[0][0] == "(document)"
    assert message in caught.value.issues[0][1]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("2026-13-01T00:00:00Z", "month value is outside expected range of 1-12"),
        ("2026-02-30T00:00:00Z", "day value is outside expected range"),
        ("'2026-02-30T00:00:00Z'", "day value is outside expected range"),
        ("2026-02-30 00:00:00Z", "day value is outside expected range"),
        # A date alone is not a request moment (docs/api.md, Times), existing or not.
        ("2026-02-30", "'2026-02-30' is not an RFC 3339 timestamp with a UTC offset"),
        ("'2026-02-30'", "'2026-02-30' is not an RFC 3339 timestamp with a UTC offset"),
        ("2026-11-01", "'2026-11-01' is not an RFC 3339 timestamp with a UTC offset"),
    ],
)
def test_an_unquoted_date_is_validated_as_a_quoted_one(written: str, message: str) -> None:
    """YAML timestamps are not resolved: PyYAML raised ValueError for a date that does not
    exist (a traceback in `qm pricebook validate`, a 500 on upload)."""
    text = EXAMPLE.read_text().replace(
        "effective_from: 2026-01-01T00:00:00Z", f"effective_from: {written}", 1
    )
    with pytest.raises(PriceBookError) as caught:
        parse_price_book(text, "yaml")
    [(path, text_of_issue)] = caught.value.issues
    assert path == "effective_from"
    assert message in text_of_issue


@pytest.mark.parametrize(
    "written",
    ["2026-05-15T12:00:00.5Z", "2026-05-15 12:00:00.5+00:00", "'2026-05-15T14:00:00.5+02:00'"],
)
def test_unquoted_and_quoted_timestamps_load_alike(written: str) -> None:
    text = EXAMPLE.read_text().replace(
        "effective_from: 2026-01-01T00:00:00Z", f"effective_from: {written}", 1
    )
    assert parse_price_book(text, "yaml").effective_from.isoformat() == (
        "2026-05-15T12:00:00.500000+00:00"
    )


def test_an_explicit_yaml_timestamp_that_does_not_exist_is_an_issue() -> None:
    text = EXAMPLE.read_text().replace(
        "effective_from: 2026-01-01T00:00:00Z", "effective_from: !!timestamp 2026-02-30", 1
    )
    with pytest.raises(PriceBookError) as caught:
        parse_price_book(text, "yaml")
    assert caught.value.issues[0][0] == "(document)"
    assert "not valid YAML: day is out of range for month" in caught.value.issues[0][1]


def test_non_utf8_bytes() -> None:
    with pytest.raises(PriceBookError, match="not UTF-8"):
        parse_price_book(b"\xff\xfe", "yaml")


def test_yaml_infinity_is_refused_with_its_path() -> None:
    text = EXAMPLE.read_text().replace("unit_price: 0.0001\n", "unit_price: .inf\n", 1)
    with pytest.raises(PriceBookError) as caught:
        parse_price_book(text, "yaml")
    assert caught.value.issues[0][0] == "prices[0].unit_price"


@pytest.mark.parametrize("number", ["1e30", "1e-31", "1000000000000000000000000000000"])
def test_a_number_too_long_to_write_in_plain_digits_is_refused_with_its_path(number: str) -> None:
    """Numbers are written back in plain digits: 1e999999 would be a million of them."""
    text = EXAMPLE.read_text().replace("unit_price: 0.0001\n", f"unit_price: {number}\n", 1)
    with pytest.raises(PriceBookError) as caught:
        parse_price_book(text, "yaml")
    assert caught.value.issues[0] == (
        "prices[0].unit_price",
        "must have at most 30 digits before and 30 after the decimal point",
    )


def test_numbers_at_the_digit_limits_load_and_keep_their_value() -> None:
    text = EXAMPLE.read_text().replace(
        "unit_price: 0.0001\n",
        "unit_price: '999999999999999999999999999999.000000000000000000000000000001'\n",
        1,
    )
    document = parse_price_book(text, "yaml")
    assert (
        canonical_json(document).count(
            '"999999999999999999999999999999.000000000000000000000000000001"'
        )
        == 1
    )


def test_numbers_are_exact_decimals_in_yaml_and_json() -> None:
    text = EXAMPLE.read_text().replace("unit_price: 0.0001\n", "unit_price: 0.1\n", 1)
    yaml_doc = parse_price_book(text, "yaml")
    rule = yaml_doc.prices[0]
    assert rule.model == "per_unit"
    assert str(rule.unit_price) == "0.1"  # not 0.1000000000000000055511151231257827
    data = json.loads(canonical_json(yaml_doc))
    data["prices"][0]["unit_price"] = 0.3  # a JSON float
    json_doc = parse_price_book(json.dumps(data), "json")
    assert json_doc.prices[0].unit_price == Decimal("0.3")  # type: ignore[union-attr]


def test_canonical_form_round_trips_and_is_stable() -> None:
    document = parse_price_book(EXAMPLE.read_text(), "yaml")
    again = document_from_json(canonical_json(document))
    assert again == document
    assert canonical_json(again) == canonical_json(document)
    assert content_hash(again) == content_hash(document)
    # The same document written as JSON has the same canonical form.
    as_json = parse_price_book(canonical_json(document), "json")
    assert content_hash(as_json) == content_hash(document)
    # And dumped back to YAML.
    dumped = yaml.safe_dump(json.loads(canonical_json(document)))
    assert parse_price_book(dumped, "yaml") == document


def test_effective_from_is_stored_in_utc() -> None:
    document = validate_document(base(effective_from="2026-01-01T01:00:00+01:00"))
    assert canonical_json(document).count('"effective_from":"2026-01-01T00:00:00Z"') == 1


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/yaml", "yaml"),
        ("application/x-yaml; charset=utf-8", "yaml"),
        ("text/yaml", "yaml"),
        ("application/json", "json"),
        (None, "json"),
    ],
)
def test_content_types(content_type: str | None, expected: str) -> None:
    assert format_for_content_type(content_type) == expected


def test_format_is_guessed_from_the_name_then_the_text() -> None:
    assert guess_format("book.yml", "{}") == "yaml"
    assert guess_format("book.json", "a: 1") == "json"
    assert guess_format("book.txt", '  {"a": 1}') == "json"
    assert guess_format("book", "a: 1") == "yaml"
