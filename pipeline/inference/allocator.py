"""Keep the memory of one upload's decode for the next one instead of giving it back.

Decoding a merchant photo allocates a few large buffers: a 1.6 Mpx WebP goes through
libwebp's RGBA canvas, the bytes Pillow copies it into and Pillow's own image, 6 MB
each; a PNG through Pillow's image and its row buffers. glibc serves blocks this large
with `mmap`, or trims them off the top of the heap as soon as they are free (its dynamic
trim threshold is twice the largest block freed so far, about 12 MB here, and one upload
frees more than that at once), so every upload page-faults all of its buffers in again,
and the kernel zeroes each page on the way.

Measured with `tools/preprocess_ab.py --rounds 6` (CPU time per image of
`preprocess_bytes` over 300 photos of the `tools/bound.py` mix, each tree in a fresh
process, alternating, on 2 shared cores; median of the rounds, min-max): WebP 19.98
(19.46-22.49) -> 12.83 (11.78-13.76) ms, PNG 15.77 -> 14.21, JPEG (decoded at 1/2-1/8
scale, small buffers) 1.96 -> 1.95, the mix 14.13 (13.86-15.87) -> 10.83 (10.08-11.48):
0.74x the CPU time. Thresholds of 32/64 MB, 64/256 MB and 256 MB/1 GB measured the same;
the smallest is kept. Pillow's own block cache (`PILLOW_BLOCKS_MAX=16`) was tried first
and made the whole path 0.3-3 ms slower per image (4 alternating runs), so it is left at
Pillow's default.

The cost is memory: a process keeps up to `TRIM_THRESHOLD` of freed heap (64 MB) instead
of returning it, and blocks under `MMAP_THRESHOLD` (32 MB, the ceiling glibc's own dynamic
threshold reaches) come from the heap. Larger ones, e.g. a 40 Mpx upload, are still mapped
and unmapped on their own. glibc only; elsewhere, or when the operator set glibc's own
variables (`MALLOC_*_`, `GLIBC_TUNABLES` with malloc settings), nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping
from typing import Any

#: mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
#: glibc reads these at start-up; when one is set, the operator has chosen for us.
GLIBC_VARIABLES = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_MAX_",
)

_lock = threading.Lock()
_outcome: bool | None = None  # (a forked child inherits both this and the setting)


def _glibc() -> Any | None:
    """The running process's C library when it is glibc (it has `gnu_get_libc_version`)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no dynamic loader (static builds)
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def keep_freed_memory(*, libc: Any | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; True when they are ours.

    False when the C library is not glibc, when the operator configured glibc's malloc
    through its environment variables, or when glibc refused a value. `libc` and `environ`
    are for tests (default: this process's C library and `os.environ`).
    """
    global _outcome
    with _lock:
        if libc is None and _outcome is not None:
            return _outcome
        env = os.environ if environ is None else environ
        operator_set = any(name in env for name in GLIBC_VARIABLES) or (
            "glibc.malloc." in env.get("GLIBC_TUNABLES", "")
        )
        target = libc if libc is not None else (None if operator_set else _glibc())
        done = False
        if target is not None and not operator_set:
            done = bool(target.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                target.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        if libc is None:
            _outcome = done
        return done
