"""Settling the heap once start-up is over."""

from __future__ import annotations

import gc

from bridge import heap


def test_settling_the_heap_hides_start_up_objects_from_the_collector() -> None:
    """`serve` calls it once started: a full collection no longer scans what start-up
    built, and young collections run every YOUNG_THRESHOLD allocations."""
    threshold = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 10_000  # this test process's modules, at least
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
