"""`train --corrections` data assembly: latest decision per image, replay mix, weights.

The SQL that picks the latest decision runs against PostgreSQL in
tests/integration/test_corrections.py; here a fake connection pins how its rows become
`CorrectedImage`s, and the mix, the weights handed to `fit` and the photo reading are
checked on tiny in-memory sets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

import vitrine.pipeline.training.fitting
from vitrine.db.repository import CorrectedImage, latest_corrections
from vitrine.db.repository.corrections import _LATEST
from vitrine.ops import corrections as ops_corrections
from vitrine.ops.errors import UserError
from vitrine.pipeline.inference.model import build_cnn
from vitrine.pipeline.training.corrections import (
    MIN_CORRECTIONS,
    CorrectionsConfig,
    accuracy,
    fine_tune,
    mix,
    replay_size,
)
from vitrine.pipeline.types import FASHION_MNIST_LABELS, ModelSpec

CONFIG = CorrectionsConfig(replay_per_correction=4, min_replay=10, correction_weight=5.0)


def test_latest_decision_per_image_is_what_the_query_orders_by() -> None:
    sql = " ".join(str(_LATEST).split())
    assert "DISTINCT ON (c.image_id)" in sql
    assert "ORDER BY c.image_id, c.decided_at DESC, c.id DESC" in sql
    assert "JOIN images i ON i.id = c.image_id" in sql


def test_rows_become_corrected_images() -> None:
    when = datetime(2026, 11, 28, tzinfo=UTC)
    row = SimpleNamespace(
        image_id=7,
        uri="/srv/a.png",
        action="relabel",
        label="Shirt",
        previous_label="T-shirt/top",
        model_id=1,
        decided_at=when,
    )
    approve = SimpleNamespace(
        image_id=9,
        uri="/srv/b.png",
        action="approve",
        label="Bag",
        previous_label=None,
        model_id=None,
        decided_at=when,
    )
    fake = SimpleNamespace(execute=lambda statement: [row, approve])
    got = latest_corrections(fake)  # type: ignore[arg-type]
    assert got == [
        CorrectedImage(7, "/srv/a.png", "relabel", "Shirt", "T-shirt/top", 1, when),
        CorrectedImage(9, "/srv/b.png", "approve", "Bag", None, None, when),
    ]


def test_replay_size_has_a_floor_a_ratio_and_a_ceiling() -> None:
    assert replay_size(1, 1000, CONFIG) == 10  # the floor
    assert replay_size(5, 1000, CONFIG) == 20  # 4 per correction
    assert replay_size(5, 12, CONFIG) == 12  # all there is


def test_mix_puts_corrections_first_weighted_up_then_a_replay_sample() -> None:
    corrected_x = np.full((5, 2, 2, 1), -1.0, np.float32)
    corrected_y = np.arange(5)
    replay_x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1).repeat(2, 1).repeat(2, 2)
    replay_y = np.arange(100) % 10
    scaled = mix(
        corrected_x,
        corrected_y,
        replay_x,
        replay_y,
        config=CONFIG,
        rng=np.random.default_rng(3),
        to_input=lambda a: a[..., None] / 255.0,
    )
    assert scaled.corrections == 5 and scaled.replay == 20
    assert len(set(scaled.replay_indices.tolist())) == 20  # without replacement
    assert list(scaled.replay_indices) == sorted(scaled.replay_indices)
    assert scaled.x.shape == (25, 2, 2, 1) and scaled.x.dtype == np.float32
    assert (scaled.x[:5] == -1).all() and list(scaled.y[:5]) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(scaled.x[5:, 0, 0, 0], scaled.replay_indices / 255.0, rtol=1e-6)
    assert list(scaled.y[5:]) == list(scaled.replay_indices % 10)
    assert list(scaled.weights) == [5.0] * 5 + [1.0] * 20
    again = mix(
        corrected_x,
        corrected_y,
        replay_x,
        replay_y,
        config=CONFIG,
        rng=np.random.default_rng(3),
        to_input=lambda a: a[..., None] / 255.0,
    )
    assert list(again.replay_indices) == list(scaled.replay_indices)  # seeded


def test_mix_refuses_images_and_labels_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ"):
        mix(
            np.zeros((2, 1)),
            np.zeros(3),
            np.zeros((9, 1)),
            np.zeros(9),
            config=CONFIG,
            rng=np.random.default_rng(0),
        )


def test_fit_is_given_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class Recorder:
        def fit(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> SimpleNamespace:
            calls.append({"x": x, "y": y, **kwargs})
            return SimpleNamespace(history={"loss": [0.5], "accuracy": [0.9]})

    monkeypatch.setattr(
        vitrine.pipeline.training.fitting, "compile_trainer", lambda *a, **k: Recorder()
    )
    monkeypatch.setattr(vitrine.pipeline.training.fitting, "settle_batchnorm", lambda *a, **k: True)
    data = mix(
        np.zeros((5, 28, 28, 1), np.float32),
        np.arange(5),
        np.zeros((50, 28, 28, 1)),
        np.zeros(50, int),
        config=CONFIG,
        rng=np.random.default_rng(0),
    )
    run = fine_tune(object(), data, config=CorrectionsConfig(epochs=2), log=lambda _: None)
    assert len(calls) == 2 and [c["initial_epoch"] for c in calls] == [0, 1]
    assert all(c["sample_weight"] is data.weights for c in calls)
    assert run["train_images"] == 25 and len(run["history"]) == 2
    assert run["batchnorm_recalibrated"] is True


def test_a_short_real_fine_tune_moves_the_weights_and_settles_batchnorm() -> None:
    model = build_cnn(num_classes=10, widths=(4, 4), embedding_dim=8)
    rng = np.random.default_rng(0)
    x = rng.random((40, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    before = [w.copy() for w in model.get_weights()]
    data = mix(x[:5], y[:5], x[5:], y[5:], config=CONFIG, rng=rng)
    run = fine_tune(
        model, data, config=CorrectionsConfig(epochs=1, learning_rate=1e-2), log=lambda _: None
    )
    assert run["batchnorm_recalibrated"] is True
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    score = accuracy(model, x, y)
    assert score is not None and 0.0 <= score <= 1.0
    assert accuracy(model, x[:0], y[:0]) is None  # no images: no score, not 0


def _png(path: Path, value: int) -> Path:
    img = Image.new("L", (40, 40), 255)
    img.paste(value, (10, 5, 30, 35))
    img.save(path)
    return path


def test_corrected_photos_are_read_preprocessed_and_the_unusable_skipped(
    tmp_path: Path,
) -> None:
    from vitrine.settings import get_settings

    when = datetime(2026, 11, 28, tzinfo=UTC)
    good = _png(tmp_path / "good.png", 20)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    rows = [
        CorrectedImage(1, str(good), "relabel", "Shirt", "T-shirt/top", 1, when),
        CorrectedImage(2, good.as_uri(), "approve", "Coat", "Coat", 1, when),
        CorrectedImage(3, str(broken), "relabel", "Bag", "Coat", 1, when),
        CorrectedImage(4, str(good), "relabel", "Scarf", "Coat", 1, when),  # not a label
        CorrectedImage(5, str(tmp_path / "gone.png"), "approve", "Bag", None, 1, when),
    ]
    base = SimpleNamespace(
        spec=ModelSpec(name="m", version="1", labels=FASHION_MNIST_LABELS, embedding_dim=8)
    )
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"  # not under the file roots
    outside.write_bytes(good.read_bytes())
    rows.append(CorrectedImage(6, outside.as_uri(), "approve", "Bag", "Bag", 1, when))
    said: list[str] = []
    settings = get_settings().model_copy(update={"file_roots": [tmp_path]})
    ctx = SimpleNamespace(settings=settings)
    photos = ops_corrections._corrected_inputs(ctx, rows, base, said.append)  # type: ignore[arg-type]
    assert photos.image_ids == [1, 2]
    assert list(photos.labels) == [FASHION_MNIST_LABELS.index("Shirt"), 4]
    assert list(photos.relabelled) == [True, False]
    assert photos.x.shape == (2, 28, 28, 1) and photos.x.dtype == np.float32
    skipped = [s.split(":")[0] for s in photos.skipped]
    assert skipped == ["image 3", "image 4", "image 5", "image 6"]
    assert "outside the workers' file roots" in photos.skipped[-1]  # the workers' own rule
    assert len(said) == 4
    assert photos.fingerprint("sha256:x") != photos.fingerprint("sha256:y")


def test_too_few_corrections_are_refused_in_one_line() -> None:
    with pytest.raises(UserError, match=f"needs at least {MIN_CORRECTIONS}") as caught:
        ops_corrections._enough(MIN_CORRECTIONS - 1, "in label_corrections")
    assert "\n" not in str(caught.value)
    ops_corrections._enough(MIN_CORRECTIONS, "in label_corrections")
