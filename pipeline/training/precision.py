"""Which arithmetic a training run uses: bf16 where the CPU has matrix units for it.

On a CPU with AMX-BF16 (Intel Sapphire Rapids and later), TensorFlow's grappler pass
`auto_mixed_precision_onednn_bfloat16` rewrites the training graph so that convolutions
and matrix products run in bf16 on AMX, while the variables stay float32: measured on a
2-core machine of that kind, today's CNN trained at 268 images per CPU-second against 151
in fp32. The saved model is float32 either way, so serving does not change.

Where the CPU lacks AMX-BF16 (and AVX512-BF16), oneDNN has no fast bf16 kernels and the
rewrite only adds conversions, so `auto` keeps fp32 there. The option is set in the
training steps only (`applied`), never in a worker or the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

Precision = Literal["bf16", "fp32"]
CHOICES = ("auto", "bf16", "fp32")

#: /proc/cpuinfo flags of CPUs with bf16 matrix or vector units oneDNN uses for training.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
GRAPPLER_OPTION = "auto_mixed_precision_onednn_bfloat16"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first processor's feature flags (empty where the file does not exist)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose(requested: str, flags: frozenset[str] | None = None) -> Precision:
    """`auto` is bf16 exactly when the CPU has bf16 units; `bf16`/`fp32` are taken as said."""
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {', '.join(CHOICES)}, not {requested!r}")
    if requested != "auto":
        return requested  # type: ignore[return-value]
    return "bf16" if (cpu_flags() if flags is None else flags) & BF16_FLAGS else "fp32"


def why(precision: str, flags: frozenset[str] | None = None) -> str:
    """One line for the log: what the CPU offers for this choice."""
    units = sorted((cpu_flags() if flags is None else flags) & BF16_FLAGS)
    if units:
        return f"this CPU has {', '.join(units)}"
    if precision == "bf16":
        return "asked for; this CPU has no bf16 units, so it is emulated and slower"
    return "this CPU has no bf16 units"


def apply(precision: Precision) -> None:
    """Set the process's grappler option for `precision` (before the first graph runs)."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({GRAPPLER_OPTION: precision == "bf16"})


@contextmanager
def applied(precision: Precision) -> Iterator[None]:
    """`precision` for the graphs first run inside the block, then the process's setting
    before it again.

    Grappler rewrites a graph when it first runs, so the training step traced inside
    keeps its bf16, and whatever is traced after the block (settling BatchNorm, scoring
    the saved model, a serving forward pass in the same process: `train --corrections`
    reports before/after accuracy, a test suite trains then predicts) runs in float32, as
    the saved model is served. Left on, the option made those forward passes bf16:
    embeddings off by up to 1e-3 and probabilities summing to 0.997."""
    before = active()
    apply(precision)
    try:
        yield
    finally:
        apply(before)


def active() -> Precision:
    """What the process's graphs are rewritten to now (read back from TensorFlow)."""
    import tensorflow as tf

    options = tf.config.optimizer.get_experimental_options()
    return "bf16" if options.get(GRAPPLER_OPTION) else "fp32"
