"""TensorFlow's start-up noise, silenced before TensorFlow is imported (workers and CLI).

`TF_CPP_MIN_LOG_LEVEL` hides TensorFlow's C++ INFO/WARNING lines, but TensorFlow 2.20 writes
two lines through absl before absl's logging is initialised, whatever that variable says:
"All log messages before absl::InitializeLog() is called are written to STDERR" and the
oneDNN notice (only `TF_ENABLE_ONEDNN_OPTS=0` avoids it, by turning oneDNN off, which
changes speed and numerics). So the import of `tensorflow` runs with file descriptor 2
captured, and what it wrote there goes back to stderr without those lines: anything else
(a real error of the import) still shows. Python-side chatter (absl, tensorflow loggers)
is turned down to errors.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: Lines TensorFlow's import writes to stderr that say nothing to an operator.
_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
    rb"STDERR|[IW]\d{4} .*\] oneDNN custom operations are on\..*|[IW]\d{4} .*cpu_feature_guard.*"
    rb"|To enable the following instructions: .* in other operations, rebuild TensorFlow .*)$"
)
_lock = threading.Lock()


def drop_noise(captured: bytes) -> bytes:
    """`captured` without TensorFlow's start-up noise lines."""
    kept = [line for line in captured.splitlines(keepends=True) if not _NOISE.match(line.strip())]
    return b"".join(kept)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        with _lock, tempfile.TemporaryFile() as sink:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(sink.fileno(), 2)
            try:
                self.inner.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                rest = drop_noise(sink.read())
                if rest:
                    os.write(2, rest)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Wraps the loader of the top-level `tensorflow` package in `_QuietLoader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def quiet_tensorflow() -> None:
    """Call before anything imports TensorFlow (or Keras); idempotent."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING lines
    for name in ("absl", "tensorflow", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlow) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlow())
