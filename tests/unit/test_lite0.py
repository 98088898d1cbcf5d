"""`train --data --backbone lite0`: heads on EfficientNet-Lite0's ImageNet features, served
as one network whose forward pass also feeds the model's own unknown detector."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vitrine.pipeline.inference import unknown
from vitrine.pipeline.inference.batch import prepare_batch
from vitrine.pipeline.inference.preprocess import object_view, prepare_photo, view_input
from vitrine.pipeline.synthetic.foreign import make_foreign_photo
from vitrine.pipeline.training import lite0, own_detector
from vitrine.pipeline.types import ImageLimits

KINDS = ("mug", "clock", "apple")  # the merchant's taxonomy
STRANGER = "laptop"  # none of it
STYLES = ("white", "transparent", "studio")


def _png(kind: str, i: int, rng: np.random.Generator) -> bytes:
    img, _ = make_foreign_photo(kind, STYLES[i % 3], rng=rng)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _catalog(root: Path, rng: np.random.Generator) -> Path:
    for kind in KINDS:
        (root / "catalog" / kind).mkdir(parents=True)
        for i in range(9):
            (root / "catalog" / kind / f"{i}.png").write_bytes(_png(kind, i, rng))
    return root / "catalog"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[bytes]]]:
    """A lite0 model trained by the CLI on 9 photos of each kind, and photos it never saw."""
    from vitrine.cli.app import app

    root = tmp_path_factory.mktemp("lite0")
    rng = np.random.default_rng(7)
    _catalog(root, rng)
    unseen = {kind: [_png(kind, i, rng) for i in range(6)] for kind in (*KINDS, STRANGER)}
    out = root / "model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(root / "catalog"),
            "--out",
            str(out),
            "--backbone",
            "lite0",
            "--epochs",
            "40",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return out, unseen


def test_the_model_directory_says_what_it_is(
    trained: tuple[Path, dict[str, list[bytes]]],
) -> None:
    out, _ = trained
    spec = json.loads((out / "model.json").read_text())
    assert spec["labels"] == sorted(KINDS)
    assert spec["input"] == {"size": 160, "channels": 3}
    assert spec["preprocess"]["view"] is True
    assert spec["training"]["backbone"] == "lite0"
    assert spec["training"]["weights_file"] == "efficientnet-lite0-57934424.pth"
    assert spec["unknown"]["features"] == unknown.FEATURES_FROM_MODEL
    assert spec["unknown"]["reference_photos"] == 27
    assert 0.0 < spec["unknown"]["threshold"] < 1.0
    assert (out / unknown.UNKNOWN_FILE).is_file()


def test_served_it_labels_new_photos_and_flags_what_is_none_of_them(
    trained: tuple[Path, dict[str, list[bytes]]],
) -> None:
    from vitrine.pipeline.inference.model import load_model_dir

    out, unseen = trained
    model = load_model_dir(out)
    assert model.is_lite0 and model.view_size is None  # the detector reads the model's features
    limits = ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24)
    labels = model.spec.labels
    for kind in (*KINDS, STRANGER):
        photos = unseen[kind]
        batch = prepare_batch(range(len(photos)), photos.__getitem__, model.spec.preprocess, limits)
        predictions = model.predict(batch.arrays)
        if kind == STRANGER:
            assert sum(p.unknown for p in predictions) >= 5, [p.unknown_score for p in predictions]
        else:
            assert sum(p.label == kind for p in predictions) >= 5, [p.label for p in predictions]
            assert sum(bool(p.unknown) for p in predictions) <= 1
        assert all(p.label in labels for p in predictions)


def test_one_pass_gives_the_backbone_features_the_heads_and_the_detector_read(
    trained: tuple[Path, dict[str, list[bytes]]],
) -> None:
    """XNNPACK's forward pass equals TensorFlow's own call of the saved network, and its
    features are the pretrained backbone's: the heads went onto the ImageNet weights."""
    from vitrine.pipeline.inference.model import LITE0_FEATURES, load_model_dir

    out, unseen = trained
    model = load_model_dir(out)
    views = np.stack([object_view(Image.open(io.BytesIO(b)), 160) for b in unseen["mug"][:3]])
    x = view_input(views, model.spec.preprocess)
    probs, embs, features = model._outputs(x)
    direct = model.keras_model(x, training=False)
    np.testing.assert_allclose(probs, np.asarray(direct["probabilities"]), atol=1e-4)
    np.testing.assert_allclose(embs, np.asarray(direct["embedding"]), atol=1e-4)
    assert features is not None and features.shape == (3, 1280)
    reference = unknown.Backbone.pretrained(160).features(views)
    assert np.all(np.sum(features * reference, axis=1) > 0.9999)
    assert model.keras_model.get_layer(LITE0_FEATURES) is not None
    scores = model.unknown_scores(x, None)
    assert scores is not None and np.allclose(
        scores, [p.unknown_score for p in model.predict(x)], atol=1e-6
    )


def test_the_worker_reads_the_object_view_as_the_model_input() -> None:
    spec = lite0.preprocess_spec(None)
    img, _ = make_foreign_photo("vase", "studio", rng=np.random.default_rng(3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    prepared = prepare_photo(
        buf.getvalue(),
        spec,
        limits=ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24),
        view_size=160,
    )
    view = object_view(Image.open(io.BytesIO(buf.getvalue())), 160)
    np.testing.assert_array_equal(prepared.array, view_input(view, spec))
    assert prepared.view is not None and np.array_equal(prepared.view, view)  # made once
    assert -1.0 <= prepared.array.min() and prepared.array.max() <= 1.0


def test_the_detector_threshold_is_set_on_photos_it_did_not_learn_from() -> None:
    """Each fold is scored against centroids of the others, so the threshold flags about
    the target share of new in-catalogue photos, and every photo far from all of them.
    Scored against centroids made with them, the photos would set it so low that most
    new ones were flagged (checked below: that is what the folds are for)."""
    rng = np.random.default_rng(0)
    centres = unknown._normalised(rng.normal(size=(6, 64)))

    def near(n: int) -> np.ndarray:
        return unknown._normalised(centres[rng.integers(0, 6, n)] + 0.05 * rng.normal(size=(n, 64)))

    known = near(600)
    centroids, threshold = own_detector.fit_detector(known, seed=1)
    assert len(centroids) == own_detector.centroid_count(600) == 300
    fresh = 1.0 - (near(4000) @ centroids.T).max(axis=1)
    assert 0.005 <= float((fresh > threshold).mean()) <= 0.05
    in_sample = np.quantile(1.0 - (known @ centroids.T).max(axis=1), 1 - unknown.TARGET_RATE)
    assert float((fresh > in_sample).mean()) > 0.2
    far = unknown._normalised(rng.normal(size=(200, 64)))
    assert float(((1.0 - (far @ centroids.T).max(axis=1)) > threshold).mean()) > 0.95


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--backbone", "lite0", "--weights", "w.h5"], "lite0 reads its ImageNet weights"),
        (["--weights", "w.h5"], "--weights is for --backbone MobileNetV3Small"),
        (["--backbone", "resnet9000"], "cnn (the default for --data), lite0, MobileNetV3Small"),
        (["--backbone", "lite0", "--input-size", "1000"], "32 to 512"),
    ],
)
def test_a_wrong_backbone_request_is_refused_before_any_work(
    tmp_path: Path, args: list[str], says: str
) -> None:
    from vitrine.cli.app import app

    (tmp_path / "w.h5").write_bytes(b"x")
    data = tmp_path / "data"
    for kind in ("a", "b"):
        (data / kind).mkdir(parents=True)
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(data), "--out", str(tmp_path / "out"), *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_its_detector_is_not_replaced_by_one_fitted_on_fashion_photos(
    trained: tuple[Path, dict[str, list[bytes]]],
) -> None:
    """`models calibrate-unknown` fits a Fashion-MNIST model's detector; on a model of a
    merchant's own classes it would call their whole catalogue foreign."""
    from vitrine.cli.app import app

    out, _ = trained
    before = (out / "model.json").read_bytes()
    result = CliRunner().invoke(app, ["models", "calibrate-unknown", str(out)])
    assert result.exit_code == 2, result.output
    assert "has classes of its own" in result.output and "Traceback" not in result.output
    assert (out / "model.json").read_bytes() == before


def test_eval_on_fashion_mnist_is_refused_for_a_model_of_its_own_classes(
    trained: tuple[Path, dict[str, list[bytes]]],
) -> None:
    from vitrine.cli.app import app
    from vitrine.settings import SAMPLE_FASHION_DIR

    out, _ = trained
    result = CliRunner().invoke(
        app, ["eval", "--model", str(out), "--data", str(SAMPLE_FASHION_DIR), "--no-hnsw"]
    )
    assert result.exit_code == 2, result.output
    assert "classes of its own" in result.output and "--images DIR" in result.output


def test_a_cnn_of_its_own_classes_gets_a_detector_that_runs_beside_it(tmp_path: Path) -> None:
    """`--backbone cnn` (the default): the detector is fitted on the same photos' object
    views and served with a backbone of its own, as the shipped model's is."""
    from vitrine.cli.app import app
    from vitrine.pipeline.inference.model import load_model_dir

    rng = np.random.default_rng(8)
    data = _catalog(tmp_path, rng)
    out = tmp_path / "cnn"
    result = CliRunner().invoke(
        app, ["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    spec = json.loads((out / "model.json").read_text())
    assert spec["input"] == {"size": 28, "channels": 1} and spec["training"]["backbone"] is None
    assert "features" not in spec["unknown"] and spec["unknown"]["view_size"] == 160
    assert spec["unknown"]["reference_photos"] == 27
    model = load_model_dir(out)
    assert not model.is_lite0 and model.view_size == 160
    photos = [_png(STRANGER, i, rng) for i in range(6)] + [_png("mug", i, rng) for i in range(6)]
    batch = prepare_batch(
        range(len(photos)),
        photos.__getitem__,
        model.spec.preprocess,
        ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24),
        view_size=model.view_size,
    )
    flagged = [bool(p.unknown) for p in model.predict(batch.arrays, views=batch.views)]
    assert sum(flagged[:6]) >= 5 and sum(flagged[6:]) <= 1, flagged


def test_the_ingest_bench_does_the_work_a_worker_does_for_it(
    trained: tuple[Path, dict[str, list[bytes]]],
) -> None:
    """No object view beside the model input and no detector of its own in the pool: the
    forward pass scores it (the bench once called a backbone the detector does not have)."""
    from vitrine.bench.measure import PhotoWork

    out, _ = trained
    work = PhotoWork.of_model(out, ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24))
    assert work.view_size is None and work.detector_dir is None and work.spec.view
