"""Where2Eat: pick restaurants a group can agree on (example app for `qm app validate`)."""

from __future__ import annotations


def invoke(event: dict[str, list[str]]) -> list[str]:
    wanted = [set(cuisines) for cuisines in event.get("preferences", [])]
    shared = set.intersection(*wanted) if wanted else set()
    return sorted(shared)[:3]
