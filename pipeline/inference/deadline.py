"""The time limit on decoding one upload (`ImageLimits.max_decode_seconds`).

Split out of `vitrine.pipeline.inference.decode`, which uses it. The pixel limit caps memory, not
CPU, and
a crafted file can spin a plugin's Python loop or make libjpeg entropy-decode a
progressive scan after scan. Two mechanisms share one deadline:

* In the main thread (a Celery prefork child runs its tasks there, as do the CLI and the
  tests) a one-shot `ITIMER_REAL` raises inside whatever Python code is running when the
  time is up: Pillow's chunk loop in `ImageFile.load`, a plugin's header or EXIF loop.
  A timer someone else armed is kept: ours is nested inside it and theirs re-armed with
  what is left of it; when theirs would fire first, we leave SIGALRM to it.
* In every thread, the file object Pillow reads from checks the deadline on each read,
  i.e. between the <= 64 KiB chunks `ImageFile.load` feeds the decoder, and
  `vitrine.pipeline.inference.decode` checks it between stages (open, load, EXIF, transpose).

Measured (tests/unit/test_decode_time_limit.py): a 3000x3000 progressive JPEG of noise
that takes 0.24-0.27 s to decode stops after 0.020-0.026 s under a 0.02 s limit, in the
main thread and in another. Neither mechanism can stop a single C call: one WebP or AVIF
frame, a compressed TIFF (handed to libtiff whole), or libjpeg's final output pass runs to
its end (at 40 Mpx, the most the pixel limit allows, about 1 s: see
`DEFAULT_MAX_DECODE_SECONDS`) and the upload fails right after it returns.
Off the main thread, a pure-Python loop that reads nothing (EXIF parsing) is not
interrupted either, only refused once it returns. The Celery hard time limit, which kills
the process, remains the backstop for both. Whatever path noticed it, the result is the
same `BadImageError`: "decoding took longer than the N s limit".
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class DecodeTimeout(BaseException):
    """Decoding ran out of time. A BaseException, so that no plugin's `except Exception`
    swallows it on the way out; `vitrine.pipeline.inference.decode` turns it into
    `BadImageError`."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"max_decode_seconds must be > 0, got {seconds}")
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = self.start + seconds

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise DecodeTimeout


class TimedBytes(io.BytesIO):
    """The upload as Pillow reads it: every read first checks the deadline (any thread)."""

    def __init__(self, data: bytes, deadline: Deadline) -> None:
        super().__init__(data)
        self._deadline = deadline

    def read(self, size: int | None = -1, /) -> bytes:
        self._deadline.check()
        return super().read(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        self._deadline.check()
        return super().readline(size)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise DecodeTimeout


@contextmanager
def alarm(deadline: Deadline) -> Iterator[None]:
    """Raise `DecodeTimeout` in the main thread when `deadline` passes, whatever Python runs.

    Does nothing off the main thread (only it receives signals), without SIGALRM
    (Windows), or when a timer armed by someone else fires first or SIGALRM has a handler
    Python cannot restore. A timer that fires later is re-armed with what is left of it.
    """
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGALRM) is None  # set outside Python: not ours to take
    ):
        yield
        return
    outer_delay, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if outer_delay and outer_delay <= deadline.seconds:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(deadline.end - time.monotonic(), 1e-6))
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous)
            if outer_delay:
                left = outer_delay - (time.monotonic() - deadline.start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_interval)
