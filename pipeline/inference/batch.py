"""Many uploads -> one array for one forward pass, each failure kept with its own key.

The worker, `vitrine eval --images` and `vitrine train --data` all read a list of files,
preprocess each and stack what worked; what did not work must fail its own row (or be
reported and skipped), never the caller. That loop lives here once, so all three catch
the same errors and word them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from vitrine.pipeline.inference.decode import BadImageError
from vitrine.pipeline.inference.preprocess import prepare_photo
from vitrine.pipeline.types import ImageInfo, ImageLimits, PreprocessSpec

K = TypeVar("K")

#: OSErrors whose meaning a person reads off the exception type: what happened, then the
#: file's name (its last path component; the caller knows which key it belongs to).
_OS_REASONS: tuple[tuple[type[OSError], str], ...] = (
    (FileNotFoundError, "file not found"),
    (IsADirectoryError, "is a directory, not a file"),
    (PermissionError, "permission denied"),
)


@dataclass(frozen=True)
class PreparedBatch(Generic[K]):
    """The model input for every key that preprocessed, and what went wrong for the rest."""

    keys: list[K]  # input order, only those that preprocessed
    arrays: np.ndarray  # float32 (len(keys), size, size, channels), zero rows when empty
    infos: list[ImageInfo]  # one per key
    failures: dict[K, Exception]  # key -> what went wrong while reading or preprocessing
    #: uint8 (len(keys), v, v, 3) object views for the unknown detector, when asked for
    views: np.ndarray | None = None


def prepare_batch(
    keys: Iterable[K],
    read: Callable[[K], bytes],
    spec: PreprocessSpec,
    limits: ImageLimits,
    digests: Mapping[K, str] | None = None,
    *,
    with_phash: bool = False,
    with_quality: bool = False,
    view_size: int | None = None,
) -> PreparedBatch[K]:
    """`read(key)` then `preprocess_bytes` for every key; every `Exception` is recorded.

    Keys are hashable and distinct (image ids, paths, work items). Nothing raised by `read`
    or by preprocessing escapes: one odd file (or a plugin tripping over hostile data) costs
    its own entry only. The caller sorts `failures` into messages, e.g. with
    `failure_reason`, or by its own exception types first (the worker retries network
    trouble). `arrays` always has the spec's shape, so an all-failed batch needs no special
    case before `np.concatenate` or a shape check. `digests`: sha256s the caller computed
    already (the worker, to look up known bytes), not computed again. `with_phash`,
    `with_quality`, `view_size`: see `prepare_photo`.
    """
    digests = digests or {}
    kept: list[K] = []
    arrays: list[np.ndarray] = []
    infos: list[ImageInfo] = []
    views: list[np.ndarray] = []
    failures: dict[K, Exception] = {}
    for key in keys:
        try:
            prepared = prepare_photo(
                read(key),
                spec,
                limits=limits,
                sha256=digests.get(key),
                with_phash=with_phash,
                with_quality=with_quality,
                view_size=view_size,
            )
        except Exception as exc:  # an odd file must fail its own entry, never the caller
            failures[key] = exc
            continue
        kept.append(key)
        arrays.append(prepared.array)
        infos.append(prepared.info)
        if prepared.view is not None:
            views.append(prepared.view)
    size, channels = int(spec.size), int(spec.channels)
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, channels), np.float32)
    stacked_views = None
    if view_size:
        shape = (0, view_size, view_size, 3)
        stacked_views = np.stack(views) if views else np.zeros(shape, np.uint8)
    return PreparedBatch(
        keys=kept, arrays=stacked, infos=infos, failures=failures, views=stacked_views
    )


def failure_reason(exc: Exception) -> str:
    """One readable line for a failure recorded by `prepare_batch`.

    `BadImageError` messages are written for merchants and pass through unchanged; a
    missing, unreadable or directory path says so with the file's name. Anything else was
    not expected, so the line keeps the exception type for whoever debugs it.
    """
    if isinstance(exc, BadImageError):
        return str(exc)
    for kind, reason in _OS_REASONS:
        if isinstance(exc, kind):
            name = Path(str(exc.filename)).name if exc.filename is not None else str(exc)
            return f"{reason}: {name}"
    return f"could not process image: {type(exc).__name__}: {exc}"
