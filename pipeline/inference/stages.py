"""CPU time per stage of a photo's preprocessing, for the ingest bench's budget table.

Every feature added to the worker was cheap alone; together they made a photo four times
as expensive, and nothing showed it until a person measured. `prepare_photo` takes a
`StageClock` and charges each stage's thread CPU time to its name, so `vitrine bench
ingest` reports decode, working copy, backdrop, upright, trim and scale, hash, quality
and view separately, per format, and a regression is a number in a table. Without a clock
(`NO_CLOCK`, the worker) a stage costs one attribute look-up.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

#: The stages `prepare_photo` reports, in the order they run.
STAGES = (
    "decode",
    "working copy",
    "backdrop",
    "upright",
    "trim and scale",
    "hash",
    "quality",
    "view",
)


class StageClock:
    """CPU seconds of this process spent in each named stage, summed over every photo
    timed. Process time, not thread time: a decoder may use threads of its own (libwebp
    through Pillow does), and their work is the photo's cost too."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            self.seconds[name] += time.process_time() - started


class _NoClock(StageClock):
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield


#: What `prepare_photo` uses when nobody measures.
NO_CLOCK: StageClock = _NoClock()
