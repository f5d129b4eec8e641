from __future__ import annotations

import gc

from quartermaster.gc_tuning import SERVING_GC_THRESHOLDS, tune_gc_for_serving


def test_tune_gc_for_serving_freezes_startup_objects_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc_for_serving()
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
