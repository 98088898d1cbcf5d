"""Fine-tuning a keras.applications backbone from a weights file the user has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from vitrine.pipeline.inference.model import build_backbone_model


def _labelled_folder(root: Path, per_class: int = 16) -> Path:
    """Two product 'classes' a backbone can tell apart: round bags and tall boots."""
    rng = np.random.default_rng(0)
    for cls in ("bag", "boot"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("RGB", (160, 160), "white")
            draw = ImageDraw.Draw(img)
            colour = tuple(int(c) for c in rng.integers(0, 200, 3))
            x, y = (int(v) for v in rng.integers(10, 40, 2))
            if cls == "bag":
                draw.ellipse([x, y, x + 100, y + 90], fill=colour)
            else:
                draw.rectangle([x, y, x + 40, y + 110], fill=colour)
            img.save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Stands in for the user's ImageNet notop file: same architecture, known values."""
    import keras

    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), include_top=False, weights=None, pooling="avg"
    )
    path = tmp_path_factory.mktemp("w") / "mobilenet_v3_small_notop.weights.h5"
    base.save_weights(path)
    return path, np.asarray(base.weights[0])


def test_backbone_starts_from_the_given_weights(weights_file: tuple[Path, np.ndarray]) -> None:
    path, first_kernel = weights_file
    model = build_backbone_model(
        backbone="MobileNetV3Small", num_classes=2, input_size=96, weights_path=str(path)
    )
    backbone = next(layer for layer in model.layers if hasattr(layer, "layers"))
    np.testing.assert_array_equal(np.asarray(backbone.weights[0]), first_kernel)
    out = model(np.zeros((2, 96, 96, 3), np.float32), training=False)
    assert out["probabilities"].shape == (2, 2)
    assert np.allclose(np.linalg.norm(np.asarray(out["embedding"]), axis=1), 1.0, atol=1e-4)


def test_unknown_backbone_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="MobileNetV3Small or EfficientNetB0"):
        build_backbone_model(backbone="resnet9000", num_classes=2, input_size=96, weights_path=None)


def test_train_cli_fine_tunes_on_a_labelled_folder(
    weights_file: tuple[Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitrine.cli.app import app
    from vitrine.settings import get_settings

    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    data = _labelled_folder(tmp_path / "catalog")
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--backbone",
            "MobileNetV3Small",
            "--weights",
            str(weights_file[0]),
            "--epochs",
            "2",
            "--json",
        ],
    )
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "model.json").read_text())
    assert spec["labels"] == ["bag", "boot"]
    assert spec["training"]["backbone"] == "MobileNetV3Small"
    assert spec["training"]["weights_file"] == weights_file[0].name
    assert spec["input"] == {"size": 96, "channels": 3}
    assert spec["preprocess"]["invert"] is False
    assert (out / "model.keras").stat().st_size > 100_000
    # like every model of a merchant's own classes, it says "unknown" for none of them
    assert spec["unknown"]["view_size"] == 160 and spec["unknown"]["reference_photos"] == 32
