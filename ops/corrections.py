"""`vitrine train --corrections`: learn from the review desk, and say what it changed.

The latest decision per image (`label_corrections`, migration 0010) is the label; the
photo is read through its uri as the worker read it (`vitrine.ops.stored_photos.read_stored`) and
preprocessed with the base model's own spec, so the model learns from exactly the input
it misjudged. The fine-tune itself (`vitrine.pipeline.training.corrections`) mixes in a replay
sample of
Fashion-MNIST so that fixing a few items does not cost the rest of the catalog.

The result is a new model directory with a new version; it is not registered or
activated: `vitrine models add DIR` and `models activate` stay the operator's decision,
made on the before/after figures this returns (base and new model on the corrected
items, on the relabelled ones alone, and on a fixed sample of the Fashion-MNIST test set).
The corrected items are also the training data, so their "after" is a fit, not a
held-out score; the test sample is the honest check that nothing else was lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vitrine.db import repository
from vitrine.db.repository.corrections import CorrectedImage
from vitrine.ops.context import Context
from vitrine.ops.data import fashion_mnist
from vitrine.ops.errors import UserError
from vitrine.ops.models import check_model_dir
from vitrine.ops.stored_photos import read_stored
from vitrine.pipeline.training.corrections import (
    MIN_CORRECTIONS,
    CorrectionsConfig,
    accuracy,
    fine_tune,
    mix,
)
from vitrine.pipeline.training.datasets import DEBIAN_DIR
from vitrine.pipeline.training.fitting import environment
from vitrine.pipeline.types import ModelSpec

if TYPE_CHECKING:
    from vitrine.pipeline.inference.model import LoadedModel

Log = Callable[[str], None]

#: Test images both models are scored on (a fixed sample: 2 CPU cores, two models).
TEST_SAMPLE = 2000


@dataclass(frozen=True)
class CorrectionsRequest:
    out: Path
    init: Path | None = None  # a model directory; None or "active": the active model
    fashion: Path | None = None
    epochs: int | None = None
    seed: int = 1234
    learning_rate: float | None = None
    version: str | None = None  # default: the base's version + ".c" + UTC timestamp


@dataclass(frozen=True)
class CorrectionsResult:
    spec: ModelSpec
    base: str
    corrections: int
    relabelled: int
    skipped: list[str]
    replay: int
    #: {"corrected" | "relabelled" | "test": {"n", "before", "after"}}
    compare: dict[str, dict[str, Any]]


def train_on_corrections(ctx: Context, req: CorrectionsRequest, *, log: Log) -> CorrectionsResult:
    from vitrine.pipeline.inference.model import load_model_dir, save_model_dir
    from vitrine.pipeline.inference.preprocess import raw_to_model_input

    if req.out.exists() and (not req.out.is_dir() or any(req.out.iterdir())):
        raise UserError(f"{req.out} exists and is not an empty directory; choose a new --out")
    base_dir = _base_dir(ctx, req.init)
    with ctx.engine().connect() as conn:
        rows = repository.latest_corrections(conn)
    _enough(len(rows), "in label_corrections")
    base = load_model_dir(base_dir)
    if not base.spec.is_fashion_mnist:
        raise UserError(
            f"{base.spec.key} is not a Fashion-MNIST model; --corrections replays "
            "Fashion-MNIST so that the model does not forget, and needs its ten labels"
        )
    photos = _corrected_inputs(ctx, rows, base, log)
    _enough(len(photos.labels), "could be read and have one of the model's labels")

    config = CorrectionsConfig(seed=req.seed)
    config = dataclasses.replace(
        config,
        epochs=req.epochs or config.epochs,
        learning_rate=req.learning_rate or config.learning_rate,
    )
    data = fashion_mnist(req.fashion, sample=req.fashion is None and not DEBIAN_DIR.is_dir())
    spec = base.spec.preprocess
    to_input = lambda a: raw_to_model_input(a, spec)  # noqa: E731
    rng = np.random.default_rng(config.seed)
    mixed = mix(
        photos.x,
        photos.labels,
        data.x_train,
        data.y_train,
        config=config,
        rng=rng,
        to_input=to_input,
    )
    test_pick = np.sort(np.random.default_rng(0).permutation(len(data.x_test))[:TEST_SAMPLE])
    test = (to_input(data.x_test[test_pick]), data.y_test[test_pick].astype(np.int64))
    relabelled = photos.relabelled

    def scores() -> dict[str, float | None]:
        model = base.keras_model
        return {
            "corrected": accuracy(model, photos.x, photos.labels),
            "relabelled": accuracy(model, photos.x[relabelled], photos.labels[relabelled]),
            "test": accuracy(model, *test),
        }

    before = scores()
    log(
        f"fine-tuning {base.spec.key} on {len(photos.labels)} corrections "
        f"+ {mixed.replay} replayed training items"
    )
    run = fine_tune(base.keras_model, mixed, config=config, log=log)
    after = scores()
    sizes = {
        "corrected": len(photos.labels),
        "relabelled": int(relabelled.sum()),
        "test": len(test[1]),
    }
    compare = {k: {"n": sizes[k], "before": before[k], "after": after[k]} for k in sizes}
    new_spec = dataclasses.replace(
        base.spec,
        version=req.version or f"{base.spec.version}.c{datetime.now(UTC):%Y%m%d%H%M%S}",
        data_fingerprint=photos.fingerprint(data.fingerprint),
        metrics={
            "test_accuracy": after["test"],
            "test_images": len(test[1]),
            "corrections_accuracy": after["corrected"],
            "val_accuracy": None,
        },
        training={
            "recipe": "corrections",
            "base_model": base.spec.key,
            "base_data_fingerprint": base.spec.data_fingerprint,
            "replay_data_fingerprint": data.fingerprint,
            "replay_images": mixed.replay,
            "corrected_image_ids": photos.image_ids,
            "corrections": len(photos.labels),
            "relabelled": sizes["relabelled"],
            "config": dataclasses.asdict(config),
            "before_after": compare,
            **run,
            "environment": environment(),
            "parameters": int(base.keras_model.count_params()),
        },
    )
    save_model_dir(base.keras_model, new_spec, req.out)
    return CorrectionsResult(
        spec=new_spec,
        base=base.spec.key,
        corrections=len(photos.labels),
        relabelled=sizes["relabelled"],
        skipped=photos.skipped,
        replay=mixed.replay,
        compare=compare,
    )


def corrections_accuracy(ctx: Context, model_dir: Path) -> dict[str, Any]:
    """`eval --corrections`: a model on the corrected items as they stand now, overall and
    the relabelled alone, so any model can be checked again after more decisions land."""
    from vitrine.pipeline.inference.model import load_model_dir

    check_model_dir(model_dir)
    with ctx.engine().connect() as conn:
        rows = repository.latest_corrections(conn)
    model = load_model_dir(model_dir)
    photos = _corrected_inputs(ctx, rows, model, lambda _: None)
    changed = photos.relabelled
    return {
        "n": len(photos.labels),
        "accuracy": accuracy(model.keras_model, photos.x, photos.labels),
        "relabelled": int(changed.sum()),
        "relabelled_accuracy": accuracy(
            model.keras_model, photos.x[changed], photos.labels[changed]
        ),
        "skipped": photos.skipped,
    }


def _enough(n: int, what: str) -> None:
    if n < MIN_CORRECTIONS:
        raise UserError(
            f"{n} corrected items {what}; train --corrections needs at least "
            f"{MIN_CORRECTIONS} (approve or relabel items at the review desk first)"
        )


def _base_dir(ctx: Context, init: Path | None) -> Path:
    """The model to fine-tune: `--init DIR`, or the active model (default, or `active`)."""
    if init is not None and str(init) != "active":
        check_model_dir(init)
        return init
    with ctx.engine().connect() as conn:
        active = repository.active_model(conn)
    if active is None:
        raise UserError("no active model to fine-tune: give --init DIR")
    check_model_dir(Path(active.path))
    return Path(active.path)


@dataclass
class _Photos:
    """The corrected photos as model input, their labels and where they came from."""

    x: np.ndarray
    labels: np.ndarray
    relabelled: np.ndarray  # bool per photo: the decision changed the label
    image_ids: list[int]
    digests: list[str]
    skipped: list[str]

    def fingerprint(self, replay: str) -> str:
        """The data fingerprint: every photo's bytes and label, and the replay set's."""
        digest = hashlib.sha256(replay.encode())
        for image_id, sha, label in zip(self.image_ids, self.digests, self.labels, strict=True):
            digest.update(f"{image_id}:{sha}:{int(label)}\n".encode())
        return "sha256:" + digest.hexdigest()


def _corrected_inputs(
    ctx: Context, rows: list[CorrectedImage], base: LoadedModel, log: Log
) -> _Photos:
    """Read and preprocess each corrected photo; one that cannot be used is skipped and
    said, rather than failing the whole run over one dead link."""
    from vitrine.pipeline.inference.decode import BadImageError
    from vitrine.pipeline.inference.preprocess import preprocess_bytes

    index = {label: i for i, label in enumerate(base.spec.labels)}
    arrays, labels, changed, ids, digests, skipped = [], [], [], [], [], []
    for row in rows:
        problem = None if row.label in index else f"label {row.label!r} is not the model's"
        if problem is None:
            try:
                raw = read_stored(ctx.settings, row.uri)
                array, _ = preprocess_bytes(
                    raw, base.spec.preprocess, limits=ctx.settings.image_limits
                )
            except (UserError, BadImageError) as exc:
                problem = str(exc)
        if problem is not None:
            skipped.append(f"image {row.image_id}: {problem}")
            log(f"skipping image {row.image_id}: {problem}")
            continue
        arrays.append(array)
        labels.append(index[row.label])
        changed.append(row.action == "relabel" and row.label != row.previous_label)
        ids.append(row.image_id)
        digests.append(hashlib.sha256(raw).hexdigest())
    shape = (0, base.spec.preprocess.size, base.spec.preprocess.size, base.spec.preprocess.channels)
    return _Photos(
        x=np.stack(arrays).astype(np.float32) if arrays else np.zeros(shape, np.float32),
        labels=np.asarray(labels, np.int64),
        relabelled=np.asarray(changed, bool),
        image_ids=ids,
        digests=digests,
        skipped=skipped,
    )
