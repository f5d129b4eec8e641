"""`qm pricebook`: load, validate, list and show price books, and choose the default one (over
HTTP: QM_URL, QM_API_KEY)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    cell_text,
    data_table,
    err,
    grouped,
    moment_text,
    out,
    plain,
    read_utf8,
    request,
    segment,
    show_table,
    stacked,
)
from quartermaster.pricing.document import (
    AnyPolicy,
    DirectPolicy,
    FloorPlusSharePolicy,
    Graduated,
    HybridPolicy,
    Package,
    PerUnit,
    PricingModel,
    ProportionalPolicy,
    Subscription,
    Tier,
    Volume,
)
from quartermaster.pricing.loader import (
    PriceBookError,
    guess_format,
    parse_price_book,
    validate_document,
)
from quartermaster.pricing.rating import fmt, price_text

pricebook_app = typer.Typer(
    help="Price books: load versions, list them, show the one in force.", no_args_is_help=True
)

FileArgument = Annotated[
    Path,
    typer.Argument(exists=True, dir_okay=False, readable=True, help="A .yaml or .json file."),
]
MEDIA_TYPES = {"yaml": "application/yaml", "json": "application/json"}


def _read(file: Path) -> tuple[str, str]:
    text = read_utf8(file)
    return text, guess_format(file.name, text)


@pricebook_app.command("load")
def load(file: FileArgument, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Upload a price book version (a new version; stored versions never change).

    Example:

      qm pricebook validate prices.yaml && qm pricebook load prices.yaml
    """
    text, fmt_name = _read(file)
    stored = request(
        "POST",
        "/v1/price-books",
        content=text.encode("utf-8"),
        headers={"Content-Type": MEDIA_TYPES[fmt_name]},
        url=url,
        api_key=api_key,
    )
    label = f"{stored['name']} v{stored['version']}"
    if stored["created"]:
        out().print(
            f"stored price book {escape(str(label))}, effective from "
            f"{moment_text(stored['effective_from'])}"
        )
    else:
        out().print(f"price book {escape(str(label))} was already stored unchanged")
    if stored["back_dated"] and stored["created"]:  # an unchanged re-upload changes no bill
        out().print(
            f"[yellow]back-dated:[/] effective {moment_text(stored['effective_from'])}, recorded "
            f"{cell_text(stored['recorded_at'])}; `qm bill late` lists the finalized runs it "
            "moves, for `qm bill adjust`"
        )
    for gone in stored.get("superseded_versions", []):
        out().print(
            f"[yellow]v{gone['version']} will never be in force:[/] v{stored['version']} takes "
            f"effect at or before its effective_from ({moment_text(gone['effective_from'])}); "
            f"to keep its prices from then on, load them again as version "
            f"{stored['version'] + 1}"
        )


@pricebook_app.command("validate")
def validate(file: FileArgument) -> None:
    """Check a price book file locally, without uploading it.

    The meters, teams, cost centers and apps it names are checked against the tenant when it
    is loaded."""
    text, fmt_name = _read(file)
    try:
        document = parse_price_book(text, "yaml" if fmt_name == "yaml" else "json")
    except PriceBookError as exc:
        console = err()
        console.print(f"[red]{escape(str(file))}: {len(exc.issues)} problem(s)[/]")
        for path, message in exc.issues:
            console.print(f"  {path}: {message}", markup=False)
        raise typer.Exit(1) from None
    out().print(
        f"{file}: valid price book {document.name} v{document.version} "
        f"({len(document.prices)} price rules, {len(document.discounts)} discounts, "
        f"{len(document.platform_costs)} platform cost policies, "
        f"{len(document.reservations)} reservations)"
    )
    out().print(
        "the meters, teams, cost centers and apps it names are checked against the tenant "
        "when it is loaded (qm pricebook load)"
    )


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    # A price book's name is what `--price-book` takes: one word, never folded.
    table = data_table(columns, title=title, whole=("name",))
    for row in rows:
        table.add_row(*(plain(value) for value in row))
    return table


@pricebook_app.command("list")
def list_books(
    at: Annotated[str | None, typer.Option(help="Version in force at (RFC 3339).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List the tenant's price books."""
    params = {"at": at} if at else {}
    books = request("GET", "/v1/price-books", params=params, url=url, api_key=api_key)
    rows = [
        (
            b["name"],
            b["currency"],
            b["in_force_version"] or "none yet",
            b["latest_version"],
            b["versions"],
            b["latest_recorded_at"],
        )
        for b in books
    ]
    columns = ("name", "currency", "in force", "latest", "versions", "last recorded")
    console = out()
    show_table(
        _table("price books", columns, rows),
        empty="no price books yet: qm pricebook load FILE stores one (docs/pricing.md)",
    )
    default = next((b["name"] for b in books if b["default"]), None)
    if default is not None:
        console.print(
            f"default: {escape(default)} (billing, previews and guardrails use it when no price "
            "book is named; qm pricebook use NAME changes it)"
        )


@pricebook_app.command("use")
def use(
    name: Annotated[str, typer.Argument(help="A price book of the tenant's, by name.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Make a price book the default one.

    Billing, previews and guardrails use the default when no price book is named."""
    chosen = request(
        "PUT", "/v1/price-books/default", json={"name": name}, url=url, api_key=api_key
    )
    out().print(
        f"default price book: {escape(str(chosen['name']))} (chosen "
        f"{cell_text(chosen['chosen_at'])} by {escape(str(chosen['chosen_by']))})"
    )


@pricebook_app.command("versions")
def versions(name: str, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Every version of a price book, with when each was in force."""
    found = request("GET", f"/v1/price-books/{segment(name)}/versions", url=url, api_key=api_key)
    # Four columns, three of them times: seven folded each date in two at 80 columns.
    rows = [
        (
            v["version"],
            _in_force(v),
            moment_text(v["effective_from"]),
            f"{cell_text(v['recorded_at'])}\nby {v['created_by']}"
            + (", back-dated" if v["back_dated"] else ""),
        )
        for v in found
    ]
    columns = ("version", "in force", "effective from", "recorded")
    out().print(_table(f"price book {name}", columns, rows))


def _in_force(version: dict[str, Any]) -> str:
    if version["in_force_from"] is None:
        return "never (superseded)"
    return f"from {moment_text(version['in_force_from'])}\n{_ends(version['in_force_until'])}"


def _ends(until: str | None) -> str:
    return f"until {moment_text(until)}" if until else "still in force"


def _quantity(value: Decimal) -> str:
    """A quantity of units grouped in thousands (`1,000,000`); prices stay as written."""
    return grouped(fmt(value))


def _tiers_text(tiers: list[Tier]) -> str:
    parts = [
        f"{'up to ' + _quantity(t.up_to) if t.up_to is not None else 'above'}: "
        f"{price_text(t.unit_price)}"
        for t in tiers
    ]
    return "; ".join(parts)


def describe_terms(model: PricingModel) -> str:
    """A pricing model's terms in one line, for tables."""
    free = getattr(model, "free_allowance", None)
    prefix = f"first {_quantity(free)} free, then " if free else ""
    if isinstance(model, PerUnit):
        return f"{prefix}{price_text(model.unit_price)} per unit"
    if isinstance(model, Graduated):
        return f"{prefix}each tier's units at its price: {_tiers_text(model.tiers)}"
    if isinstance(model, Volume):
        return f"{prefix}all units at the reached tier's price: {_tiers_text(model.tiers)}"
    if isinstance(model, Package):
        return (
            f"{prefix}{price_text(model.package_price)} per started block of "
            f"{_quantity(model.package_size)} units"
        )
    if isinstance(model, Subscription):
        overage = describe_terms(model.overage) if model.overage else "not charged"
        included = _quantity(model.included)
        return f"fee {price_text(model.fee)}, {included} included, overage: {overage}"
    raise TypeError(f"unknown pricing model {model!r}")


def describe_policy(policy: AnyPolicy) -> str:
    if isinstance(policy, DirectPolicy):
        return f"direct to {policy.to.describe()}"
    if isinstance(policy, ProportionalPolicy):
        return f"proportional to {policy.meter}"
    if isinstance(policy, FloorPlusSharePolicy):
        basis = f"by {policy.meter}" if policy.meter else "evenly"
        return f"floor {price_text(policy.floor)} per active app + the rest {basis}"
    if isinstance(policy, HybridPolicy):
        share = fmt(policy.proportional_share * 100)
        return f"hybrid: {share}% proportional to {policy.meter}, the rest even per active app"
    return "even per active app"


@pricebook_app.command("show")
def show(
    name: str,
    at: Annotated[str | None, typer.Option(help="In force at (RFC 3339); default now.")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Ignore versions recorded after this.")
    ] = None,
    version: Annotated[int | None, typer.Option(help="A given version instead.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show the version of a price book in force (or a given version).

    Examples:

      qm pricebook show standard
      qm pricebook show standard --at 2026-11-15T00:00:00Z
      qm pricebook show standard --version 2
    """
    if version is not None:
        found = request(
            "GET",
            f"/v1/price-books/{segment(name)}/versions/{segment(version)}",
            url=url,
            api_key=api_key,
        )
    else:
        params = {key: value for key, value in (("at", at), ("as_of", as_of)) if value}
        found = request(
            "GET", f"/v1/price-books/{segment(name)}", params=params, url=url, api_key=api_key
        )
    document = validate_document(found["document"])
    console = out()
    console.print(
        f"[bold]{document.name}[/] v{document.version} ({document.currency}), effective from "
        f"{moment_text(found['effective_from'])}, {_ends(found['in_force_until'])}; recorded "
        f"{cell_text(found['recorded_at'])} by {found['created_by']}"
    )
    if document.description:
        console.print(document.description)
    # Three columns: the meter over whom the rule is for, the model over how usage is pooled
    # before tiers apply, and the terms. Five, one per field, left the terms 14 letters wide
    # at 80 columns: a tiered price took ten lines.
    prices = data_table(("meter", "model", "terms"), title="prices")
    for rule in document.prices:
        prices.add_row(
            stacked(rule.meter, rule.scope.describe() if rule.scope else "everyone", head_style=""),
            stacked(rule.model, f"pooled per {rule.pool.value.replace('_', ' ')}", head_style=""),
            plain(describe_terms(rule)),
        )
    console.print(prices)
    if document.discounts:
        rows = [
            (d.name, f"{d.percent}%", d.applies_to.describe(), ", ".join(d.meters or ["all"]))
            for d in document.discounts
        ]
        console.print(_table("discounts", ("name", "percent", "applies to", "meters"), rows))
    if document.platform_costs:
        policies = [(p.cost_type, describe_policy(p)) for p in document.platform_costs]
        console.print(_table("platform costs", ("cost type", "allocation"), policies))
    if document.reservations:
        reserved = [(r.name, r.meter, price_text(r.credit)) for r in document.reservations]
        console.print(_table("reservations", ("name", "meter", "credit per period"), reserved))
