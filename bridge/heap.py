"""The garbage collector, set for a long-running server once it has started.

Start-up builds many objects that live as long as the process (modules, SQLAlchemy and
pydantic schemas, the config); with CPython's defaults every full collection scans them all
again, stalling the event loop, and young collections run every few dozen webhooks. A webhook
leaves almost no cyclic garbage (its objects are freed by reference counting), so neither is
needed that often. `worker` processes keep CPython's defaults.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)


def settle() -> None:
    """Move what start-up built out of the collector's sight (`gc.freeze`) and collect young
    objects less often; call once, after start-up."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
