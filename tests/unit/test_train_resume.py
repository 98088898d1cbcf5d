"""Long runs on a CPU: a stopped run resumes exactly, bf16 is the training process's choice
only, the weight average is kept apart until the end, and the ResNet the recipe can build.

The resume test trains a small network twice on the slice (about 10 s each on 2 cores):
once for 4 epochs straight, once stopped during epoch 3 and resumed. With augmentation,
dropout, the optimizer's moments and the weight average all in play, anything a
checkpoint forgot would show as a difference in the saved weights (the average, which
follows every step of the live ones).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from vitrine.ops.errors import UserError
from vitrine.ops.training import AlreadyTrained, TrainRequest, resumed_request, train
from vitrine.pipeline.inference.model import build_resnet, load_model_dir
from vitrine.pipeline.training import fitting, precision
from vitrine.pipeline.training.datasets import load_fashion_mnist
from vitrine.pipeline.training.train import TrainConfig, train_fashion_mnist
from vitrine.pipeline.types import ImageLimits
from vitrine.settings import SAMPLE_FASHION_DIR

RUN = dict(
    fashion=SAMPLE_FASHION_DIR,
    epochs=4,
    limit=640,
    widths="8,8,8",
    embedding_dim=8,
    blur=0.5,
    tilt=0.5,
    seed=11,
    precision="fp32",
    photo_views=40,
    ema=0.9,
)


LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=1 << 20)  # unused: no folder here


class Stopped(Exception):
    """The run is stopped here, as a kill would stop it."""


def _weights(out: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in load_model_dir(out).keras_model.get_weights()]


def test_a_run_stopped_after_epoch_2_of_4_resumes_to_the_same_model(tmp_path: Path) -> None:
    limits = LIMITS
    whole = tmp_path / "whole"
    train(TrainRequest(out=whole, **RUN), limits=limits, log=lambda _: None)

    stopped = tmp_path / "stopped"
    lines: list[str] = []

    def stop_in_epoch_3(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch 3/4"):  # trained, but its checkpoint is not written yet
            raise Stopped

    with pytest.raises(Stopped):
        train(TrainRequest(out=stopped, **RUN), limits=limits, log=stop_in_epoch_3)
    progress = json.loads((stopped / "checkpoint" / "progress.json").read_text())
    assert progress["epoch"] == 2 and not (stopped / "model.json").exists()
    assert "ETA" in lines[-1] and lines[0].startswith("training in fp32")

    resumed_lines: list[str] = []
    spec = train(resumed_request(stopped), limits=limits, log=resumed_lines.append, resume=True)
    # the photo views are read back, not made again, and the run goes on where it stopped
    assert resumed_lines[1] == f"40 photo views from {stopped / 'checkpoint' / 'photo-views.npz'}"
    assert resumed_lines[2].startswith("resuming after epoch 2/4 (")
    epochs = [line.split()[1] for line in resumed_lines if line.startswith("epoch ")]
    assert epochs == ["3/4", "4/4"]
    for a, b in zip(_weights(whole), _weights(stopped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    straight = json.loads((whole / "model.json").read_text())
    assert spec.metrics == straight["metrics"]
    assert len(spec.training["history"]) == 4
    assert spec.training["train_images"] == 608 + 40  # 640 less 5 % held out, plus the views
    assert not (stopped / "checkpoint").exists()  # dropped once the model is saved
    with pytest.raises(AlreadyTrained):  # resuming a finished run is not an error
        resumed_request(stopped)


def test_a_run_stopped_in_its_first_epoch_starts_again(tmp_path: Path) -> None:
    run = {**RUN, "epochs": 1, "limit": 256, "photo_views": 0, "ema": None}

    def stop(line: str) -> None:
        if line.startswith("epoch 1/1"):
            raise Stopped

    with pytest.raises(Stopped):
        train(TrainRequest(out=tmp_path, **run), limits=LIMITS, log=stop)
    assert not (tmp_path / "checkpoint" / "progress.json").exists()
    lines: list[str] = []
    train(resumed_request(tmp_path), limits=LIMITS, log=lines.append, resume=True)
    assert lines[1] == "no epoch had finished: starting again at epoch 1/1"
    assert (tmp_path / "model.json").is_file()


def test_resume_needs_a_checkpoint_and_takes_the_run_as_it_was(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no run to resume"):
        resumed_request(tmp_path)
    folder = tmp_path / "run" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(
        json.dumps({"epoch": 3, "state": "epoch-0003", "history": [], "rng": {}, "elapsed_s": 1})
    )
    (folder / "request.json").write_text(
        json.dumps({"out": "/elsewhere", "fashion": "/old/data", "epochs": 9, "seed": 5})
    )
    request = resumed_request(tmp_path / "run", Path("/new/data"))
    assert (request.out, request.fashion, request.epochs, request.seed) == (
        tmp_path / "run",
        Path("/new/data"),
        9,
        5,
    )


def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_units() -> None:
    assert precision.choose("auto", frozenset({"avx512f", "amx_bf16", "amx_tile"})) == "bf16"
    assert precision.choose("auto", frozenset({"avx512f", "avx512_bf16"})) == "bf16"
    assert precision.choose("auto", frozenset({"avx512f", "avx2"})) == "fp32"
    assert precision.choose("bf16", frozenset()) == "bf16"
    assert precision.choose("fp32", frozenset({"amx_bf16"})) == "fp32"
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        precision.choose("fp16", frozenset())
    assert "emulated" in precision.why("bf16", frozenset())
    assert precision.why("bf16", frozenset({"amx_bf16"})) == "this CPU has amx_bf16"


def test_a_bf16_run_trains_in_bf16_then_scores_and_saves_float32(tmp_path: Path) -> None:
    """The grappler option is on for the training steps only: each epoch's line is logged
    inside them, the final scores' line after them, when the process's setting is back
    (left on, a forward pass later in the same process ran in bf16: embeddings off by
    1e-3, probabilities summing to 0.997, and the model contract's tests failed)."""
    config = TrainConfig(
        epochs=2, widths=(4, 4, 4), embedding_dim=8, train_limit=256, precision="bf16"
    )
    assert precision.active() == "fp32"
    seen: list[tuple[str, str]] = []
    spec = train_fashion_mnist(
        load_fashion_mnist(SAMPLE_FASHION_DIR),
        out_dir=tmp_path / "m",
        config=config,
        log=lambda line: seen.append((line.split()[0], precision.active())),
        verbose=0,
    )
    assert [state for word, state in seen if word == "epoch"] == ["bf16", "bf16"]
    assert seen[-1][0] != "epoch" and seen[-1][1] == "fp32"  # the scores' line
    assert precision.active() == "fp32"
    assert spec.training["config"]["precision"] == "bf16"
    assert {str(w.dtype) for w in _weights(tmp_path / "m")} == {"float32"}


def test_resnet_depths_and_the_model_contract() -> None:
    model = build_resnet(num_classes=10, depth=20, embedding_dim=128)
    out = model(np.zeros((2, 28, 28, 1), np.float32), training=False)
    assert set(out) == {"probabilities", "embedding"}
    assert tuple(out["probabilities"].shape) == (2, 10)
    assert tuple(out["embedding"].shape) == (2, 128)
    # the 6n+2 body is He et al.'s 0.27 M parameters; the heads add 64x128 + 128x10 + BN
    assert 270_000 < model.count_params() < 290_000
    deeper = build_resnet(num_classes=10, depth=32)
    assert deeper.count_params() > 1.6 * model.count_params()
    with pytest.raises(ValueError, match="6n\\+2"):
        build_resnet(num_classes=10, depth=21)


def test_the_weight_average_is_kept_apart_from_training_until_it_is_saved() -> None:
    """Keras's `use_ema` copies the average over the weights whenever `fit` returns: with
    one `fit` per epoch, every epoch would restart from the average. Here the weights go
    on from the last step, and `use_average` takes the average once, at the end."""
    import keras

    keras.utils.set_random_seed(3)
    model = build_resnet(num_classes=10, depth=8, embedding_dim=8)
    trainer = fitting.compile_trainer(
        keras,
        model,
        epochs=2,
        steps_per_epoch=4,
        learning_rate=1e-2,
        warmup_epochs=0,
        weight_decay=0.0,
        ema_momentum=0.5,
    )
    rng = np.random.default_rng(0)
    x = rng.random((64, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    for epoch in range(2):
        trainer.fit(x, y, batch_size=16, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
    live = [np.array(v) for v in trainer.trainable_variables]
    average = [np.array(v) for v in trainer.optimizer.variables if "average" in v.path]
    assert len(average) == len(live)
    assert any(not np.allclose(a, b) for a, b in zip(live, average, strict=True))
    assert fitting.use_average(trainer)
    for variable, value in zip(trainer.trainable_variables, average, strict=True):
        np.testing.assert_array_equal(np.array(variable), value)
    # an average needs BatchNorm's statistics measured again, however long the run
    assert fitting.settle_batchnorm(model, x, total_steps=10**6, averaged=True)
    assert not fitting.settle_batchnorm(model, x, total_steps=10**6)


def test_averaging_changes_what_is_saved_and_nothing_of_the_training(tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, widths=(4, 4, 4), embedding_dim=8, train_limit=256)
    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    plain = train_fashion_mnist(
        data, out_dir=tmp_path / "plain", config=config, log=lambda _: None, verbose=0
    )
    averaged = train_fashion_mnist(
        data,
        out_dir=tmp_path / "averaged",
        config=dataclasses.replace(config, ema_momentum=0.9),
        log=lambda _: None,
        verbose=0,
    )
    losses = [[row["loss"] for row in s.training["history"]] for s in (plain, averaged)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    assert averaged.training["config"]["ema_momentum"] == 0.9
    differs = [
        not np.allclose(a, b)
        for a, b in zip(_weights(tmp_path / "plain"), _weights(tmp_path / "averaged"), strict=True)
    ]
    assert any(differs)


def test_ema_outside_zero_to_one_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="between 0 and 1"):
        train(TrainRequest(out=tmp_path / "m", ema=1.0), limits=LIMITS, log=lambda _: None)
    assert not (tmp_path / "m").exists()
