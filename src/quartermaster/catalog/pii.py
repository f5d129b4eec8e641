"""PII detection in text: emails, phone numbers, payment card numbers (Luhn-checked), IBANs
(mod-97-checked) and national ids (US SSN, UK NINO). Pure functions.

Checksums keep the false positives down: a 16-digit order number is not a card unless it
passes Luhn, an IBAN-shaped string is not an IBAN unless its mod-97 remainder is 1. A finding
carries a masked sample, never the whole value, so reports do not spread the PII they found."""

from __future__ import annotations

import re
from dataclasses import dataclass

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# International (+CC then 8-14 digits in groups), or North-American (555) 123-4567 /
# 555-123-4567. Bare digit groups are not taken: they are usually order or version numbers.
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?!\w)"
)
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
US_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
UK_NINO = re.compile(r"\b(?![DFIQUV])[A-Z](?![DFIQUVO])[A-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")

# Lengths of IBANs per country (ISO 13616 registry, the common ones): a wrong length is no IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22,
    "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18,
    "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PiiFinding:
    kind: str  # email | phone | card | iban | national_id
    where: str  # a manifest field or "file:line"
    sample: str  # masked


def luhn_valid(digits: str) -> bool:
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    iban = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def mask(value: str) -> str:
    """Keep the first and last two characters: enough to find it again, not to reuse it."""
    compact = value.strip()
    if len(compact) <= 6:
        return "*" * len(compact)
    return f"{compact[:2]}{'*' * (len(compact) - 4)}{compact[-2:]}"


def find_pii(text: str, *, where: str) -> list[PiiFinding]:
    found: list[PiiFinding] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, match: re.Match[str]) -> None:
        start, end = match.span()
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            return
        taken.append((start, end))
        found.append(PiiFinding(kind=kind, where=where, sample=mask(match.group())))

    for match in EMAIL.finditer(text):
        add("email", match)
    for match in IBAN.finditer(text):
        if iban_valid(match.group()):
            add("iban", match)
    for match in CARD.finditer(text):
        if luhn_valid(re.sub(r"[ -]", "", match.group())):
            add("card", match)
    for pattern in (US_SSN, UK_NINO):
        for match in pattern.finditer(text):
            add("national_id", match)
    for match in PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 9 <= len(digits) <= 15:
            add("phone", match)
    return found


def find_pii_in_lines(text: str, *, file: str) -> list[PiiFinding]:
    found: list[PiiFinding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        found.extend(find_pii(line, where=f"{file}:{number}"))
    return found
