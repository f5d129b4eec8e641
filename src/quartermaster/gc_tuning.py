"""Garbage-collector settings for the long-running serving processes (`qm serve` and its
validation workers)."""

from __future__ import annotations

import gc

# Allocations between young-generation collections while serving. Parsing a batch of 1,000
# events allocates ~20,000 objects; at CPython's default (700) each batch paid ~30 young
# collections and frequent older ones over every live object of the process.
SERVING_GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc_for_serving() -> None:
    """Move everything alive after startup (modules, the app, caches) out of the collector's
    reach, and collect young objects less often: the ingest benchmark's server spent ~20 %
    less CPU per event, a validation worker ~5 % (docs/performance.md). Process-wide, so only
    the serving processes call it, once their startup is done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)
