"""vitrine.pipeline.inference.decode enforces ImageLimits.max_decode_seconds: slow input fails, and
fails early.

The slow input is real: a 3000x3000 progressive JPEG of noise (about 9 MB), whose many
scans libjpeg must entropy-decode whatever the draft scale (measured: 0.24-0.27 s to decode
on 2 shared cores, 0.4 s to encode). With a 0.02 s limit decoding must stop after a small
part of that, in the main thread (timer signal) and in any other thread (the deadline is
checked on every read of the input).
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vitrine.pipeline.inference.decode import BadImageError, decode
from vitrine.pipeline.types import DEFAULT_MAX_DECODE_SECONDS, ImageLimits

LIMITS = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000, max_decode_seconds=60.0)
TINY = ImageLimits(max_bytes=40_000_000, max_pixels=40_000_000, max_decode_seconds=0.02)


@pytest.fixture(scope="module")
def slow_jpeg() -> bytes:
    noise = np.random.default_rng(7).integers(0, 256, (3000, 3000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=95, progressive=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def full_decode_seconds(slow_jpeg: bytes) -> float:
    """How long the slow JPEG takes when nothing stops it (the best of two runs)."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        decode(slow_jpeg, limits=LIMITS)
        times.append(time.perf_counter() - start)
    assert min(times) > 0.1, "the input is not slow enough to show anything"
    return min(times)


@pytest.fixture
def small_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def in_thread(fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run `fn` in a fresh thread: (what it raised, seconds it took)."""
    outcome: list[BaseException | None] = [None]
    took = [0.0]

    def target() -> None:
        start = time.perf_counter()
        try:
            fn()
        except BaseException as exc:  # noqa: B036 - reported to the test
            outcome[0] = exc
        took[0] = time.perf_counter() - start

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0], took[0]


def test_slow_image_stops_early_in_the_main_thread(
    slow_jpeg: bytes, full_decode_seconds: float
) -> None:
    start = time.perf_counter()
    with pytest.raises(BadImageError, match=r"decoding took longer than the 0\.02 s limit"):
        decode(slow_jpeg, limits=TINY)
    took = time.perf_counter() - start
    assert took < full_decode_seconds / 2, (took, full_decode_seconds)


def test_slow_image_stops_early_in_another_thread(
    slow_jpeg: bytes, full_decode_seconds: float
) -> None:
    raised, took = in_thread(lambda: decode(slow_jpeg, limits=TINY))
    assert isinstance(raised, BadImageError), raised
    assert "decoding took longer than the 0.02 s limit" in str(raised)
    assert took < full_decode_seconds / 2, (took, full_decode_seconds)


def test_the_same_image_within_its_limit_decodes(slow_jpeg: bytes) -> None:
    img, info = decode(slow_jpeg, limits=LIMITS)
    assert (info.width, info.height) == (3000, 3000) and img.size == (375, 375)


@pytest.fixture
def endless_exif(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """EXIF parsing becomes a pure-Python loop that reads nothing, like a hostile IFD chain
    (bounded at 3 s so that a broken limit fails the test instead of hanging it)."""

    def spin(self: Image.Image) -> Image.Exif:
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            pass
        return Image.Exif()

    monkeypatch.setattr(Image.Image, "getexif", spin)
    yield


@pytest.mark.usefixtures("endless_exif")
def test_a_python_loop_is_interrupted_in_the_main_thread(small_png: bytes) -> None:
    limits = ImageLimits(max_bytes=10**6, max_pixels=10**6, max_decode_seconds=0.1)
    start = time.perf_counter()
    with pytest.raises(BadImageError, match=r"longer than the 0\.1 s limit"):
        decode(small_png, limits=limits)
    assert time.perf_counter() - start < 1.0


@pytest.mark.usefixtures("endless_exif")
def test_off_the_main_thread_a_loop_that_reads_nothing_is_refused_when_it_returns(
    small_png: bytes,
) -> None:
    """The documented limit of the mechanism: no signal reaches other threads."""
    limits = ImageLimits(max_bytes=10**6, max_pixels=10**6, max_decode_seconds=0.1)
    raised, took = in_thread(lambda: decode(small_png, limits=limits))
    assert isinstance(raised, BadImageError) and "0.1 s limit" in str(raised)
    assert took >= 3.0


def test_a_timer_armed_by_someone_else_is_kept(slow_jpeg: bytes, small_png: bytes) -> None:
    fired: list[int] = []
    saved_handler = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    saved_timer = signal.setitimer(signal.ITIMER_REAL, 30.0)  # (pytest-timeout's, if any)
    try:
        decode(small_png, limits=LIMITS)  # ours nested inside theirs, finished in time
        with pytest.raises(BadImageError):
            decode(slow_jpeg, limits=TINY)  # ours nested inside theirs, fired
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25.0 < delay < 30.0
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # theirs fires before ours would
        decode(small_png, limits=LIMITS)
        time.sleep(0.2)
        assert fired == [signal.SIGALRM]
        assert signal.getsignal(signal.SIGALRM) is not None
    finally:
        signal.setitimer(signal.ITIMER_REAL, *saved_timer)
        signal.signal(signal.SIGALRM, saved_handler)


def test_the_limit_defaults_and_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitrine.settings import Settings

    assert ImageLimits(max_bytes=1, max_pixels=1).max_decode_seconds == DEFAULT_MAX_DECODE_SECONDS
    assert Settings().image_limits.max_decode_seconds == DEFAULT_MAX_DECODE_SECONDS
    monkeypatch.setenv("VITRINE_MAX_DECODE_SECONDS", "0.5")
    assert Settings().image_limits.max_decode_seconds == 0.5


def test_a_limit_that_is_not_positive_is_a_mistake(small_png: bytes) -> None:
    with pytest.raises(ValueError, match="max_decode_seconds must be > 0"):
        decode(
            small_png, limits=ImageLimits(max_bytes=10**6, max_pixels=10**6, max_decode_seconds=0)
        )
