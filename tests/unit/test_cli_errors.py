"""User mistakes on the command line: exit code 2, one clear line, no traceback.

Only paths that validate their input before starting PostgreSQL/Redis are tested here;
the `no_services` fixture makes any attempt to start them fail the test loudly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

import vitrine.embedded.services
import vitrine.ops.context
from vitrine.cli.app import app
from vitrine.settings import get_settings

runner = CliRunner()


class ServicesStarted(AssertionError):
    """Raised if a command under test tries to start or reach the servers."""


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings read from a clean environment whose data dir is a temporary directory."""
    data_dir = tmp_path / "vitrine-data"
    monkeypatch.setenv("VITRINE_DATA_DIR", str(data_dir))
    for name in (
        "DATABASE_URL",
        "VITRINE_DATABASE_URL",
        "REDIS_URL",
        "VITRINE_REDIS_URL",
        "VITRINE_MODEL_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()
    assert not (data_dir / "services").exists(), "a command started embedded services"


@pytest.fixture(autouse=True)
def no_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach or start PostgreSQL or Redis fails the test loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise ServicesStarted("the command tried to reach a server before validating input")

    for method in ("database_url", "engine", "broker_url", "urls"):
        monkeypatch.setattr(vitrine.ops.context.Context, method, refuse)
    monkeypatch.setattr(vitrine.embedded.services, "ensure_service", refuse)
    monkeypatch.setattr(vitrine.embedded.services, "ensure_services", refuse)


def invoke(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result: Result, *fragments: str) -> str:
    """Exit 2, the fragments in the (whitespace-normalised) output, and no traceback."""
    text = " ".join(result.output.split())
    assert not isinstance(result.exception, ServicesStarted), text
    assert result.exit_code == 2, (result.exit_code, text, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "error:" in text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def _png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path)
    return path


# --------------------------------------------------------------------------- submit / ingest


def test_submit_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    assert_user_error(
        invoke("submit", missing, "--merchant", "m1"),
        "no such file or directory",
        "nothing was submitted",
    )


def test_submit_directory_without_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert_user_error(
        invoke("submit", tmp_path / "empty", "--merchant", "m1"), "no image files found"
    )


def test_submit_sku_with_several_files(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    assert_user_error(
        invoke("submit", a, b, "--merchant", "m1", "--sku", "SKU-1"), "--sku applies to one image"
    )


def test_ingest_without_paths_or_manifest() -> None:
    assert_user_error(invoke("ingest"), "give image paths", "--manifest")


def test_ingest_missing_manifest(tmp_path: Path) -> None:
    assert_user_error(
        invoke("ingest", "--manifest", tmp_path / "missing.csv"), "cannot read manifest"
    )


# --------------------------------------------------------------------------- eval


def test_eval_images_without_manifest_reports_the_unknown_rate(tmp_path: Path) -> None:
    """Without labels there is no accuracy, but the share flagged "none of our categories"
    is still measured: here a product on white and a circuit board."""
    import json

    import numpy as np

    from vitrine.pipeline.synthetic.foreign import make_foreign_photo
    from vitrine.pipeline.synthetic.photos import make_product_photo
    from vitrine.pipeline.training.datasets import load_fashion_mnist
    from vitrine.settings import SAMPLE_FASHION_DIR

    images = tmp_path / "photos"
    images.mkdir()
    rng = np.random.default_rng(3)
    item = load_fashion_mnist(SAMPLE_FASHION_DIR).x_test[0]
    make_product_photo(item, rng=rng)[0].convert("RGB").save(images / "shirt.jpg")
    make_foreign_photo("circuit board", "white", rng=rng)[0].save(images / "board.jpg")
    result = invoke("eval", "--images", images, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n"] == 2 and report["unknown_rate"] == 0.5
    assert "accuracy" not in report


def test_eval_manifest_without_images(tmp_path: Path) -> None:
    manifest = tmp_path / "labels.csv"
    manifest.write_text("file,label\na.png,Bag\n")
    assert_user_error(invoke("eval", "--manifest", manifest), "--manifest goes with --images")


def test_eval_model_dir_without_model_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model is checked before the data set: a machine without Debian's Fashion-MNIST
    still gets the message about the model directory it got wrong."""
    import vitrine.ops.data

    monkeypatch.setattr(vitrine.ops.data, "DEBIAN_DIR", tmp_path / "no-datasets-here")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    assert_user_error(
        invoke("eval", "--model", not_a_model, "--no-hnsw"), "model.json", "vitrine train"
    )


def test_eval_without_fashion_mnist_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vitrine.ops.data

    monkeypatch.setattr(vitrine.ops.data, "DEBIAN_DIR", tmp_path / "no-datasets-here")
    assert_user_error(invoke("eval", "--no-hnsw"), "dataset-fashion-mnist", "--data")


# --------------------------------------------------------------------------- train


def test_train_weights_without_backbone(tmp_path: Path) -> None:
    assert_user_error(
        invoke("train", "--out", tmp_path / "model", "--weights", "x.h5"),
        "--weights is for --backbone",
    )
    assert not (tmp_path / "model").exists()


def test_train_missing_weights_file(tmp_path: Path) -> None:
    assert_user_error(
        invoke(
            "train",
            "--out",
            tmp_path / "model",
            "--backbone",
            "MobileNetV3Small",
            "--weights",
            tmp_path / "missing.weights.h5",
        ),
        "not found",
    )


def test_train_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "existing-model"
    out.mkdir()
    (out / "model.json").write_text("{}")
    assert_user_error(invoke("train", "--out", out), "exists and is not an empty directory")
    assert (out / "model.json").read_text() == "{}"  # nothing was overwritten


def test_train_out_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "model.keras"
    out.write_bytes(b"x")
    assert_user_error(invoke("train", "--out", out), "not an empty directory")


def test_train_data_folder_missing(tmp_path: Path) -> None:
    assert_user_error(
        invoke("train", "--out", tmp_path / "model", "--data", tmp_path / "no-such-folder"),
        "does not exist",
    )


def test_train_data_folder_with_one_class(tmp_path: Path) -> None:
    data = tmp_path / "shop"
    _png(data / "shoes" / "a.png")
    _png(data / "shoes" / "b.png")
    assert_user_error(
        invoke("train", "--out", tmp_path / "model", "--data", data),
        "needs at least two class subfolders",
    )
    assert not (tmp_path / "model").exists()


def test_models_add_wrong_directory_starts_nothing(tmp_path: Path) -> None:
    assert_user_error(invoke("models", "add", tmp_path), "model.json")


def test_eval_data_dir_without_idx_files_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "fmnist").mkdir()
    assert_user_error(invoke("eval", "--data", tmp_path / "fmnist"), "train-images")


def test_train_bad_widths(tmp_path: Path) -> None:
    assert_user_error(
        invoke("train", "--out", tmp_path / "m", "--widths", "a,b"), "comma-separated"
    )


def test_eval_manifest_with_unknown_label(tmp_path: Path) -> None:
    images = tmp_path / "photos"
    _png(images / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,label\na.png,Sweater\n")
    assert_user_error(
        invoke("eval", "--images", images, "--manifest", manifest), "unknown label", "Ankle boot"
    )


def test_eval_on_a_tiny_manifest(tmp_path: Path) -> None:
    """The photo path end to end on two files: JSON out, nothing started."""
    import json

    from vitrine.pipeline.synthetic.photos import write_catalog
    from vitrine.pipeline.training.datasets import load_fashion_mnist
    from vitrine.settings import SAMPLE_FASHION_DIR

    data = load_fashion_mnist(SAMPLE_FASHION_DIR)
    manifest = write_catalog(data.x_test, data.y_test, tmp_path / "photos", n=12, seed=5)
    result = invoke("eval", "--images", tmp_path / "photos", "--manifest", manifest, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 12 and report["source"]["unreadable"] == []
    assert report["accuracy"] >= 0.75  # 12 photos of a ~0.93 model: a loose, honest bound
    assert sum(c["support"] for c in report["per_class"].values()) == 12


def test_photos_unknown_style(tmp_path: Path) -> None:
    result = invoke("photos", tmp_path / "out", "--n", "2", "--sample", "--style", "catalogue")
    assert_user_error(result, "--style must be one of merchant, studio")
    assert not (tmp_path / "out").exists()


def test_train_init_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("train", "--out", tmp_path / "out", "--init", tmp_path / "empty")
    assert_user_error(result, "model.json")


def test_train_init_with_data_folder(tmp_path: Path) -> None:
    result = invoke(
        "train", "--out", tmp_path / "out", "--init", "models/fashion-cnn", "--data", tmp_path
    )
    assert_user_error(result, "--init fine-tunes a Fashion-MNIST model")


def test_similar_needs_exactly_one_query(tmp_path: Path) -> None:
    assert_user_error(invoke("similar"), "give an IMAGE_ID or --image FILE")
    assert_user_error(invoke("similar", "3", "--image", tmp_path / "x.jpg"), "one of them")


def test_urls_are_refused_before_anything_is_queued() -> None:
    """Nothing reaches a server: a malformed URL and an unsupported scheme are one line."""
    assert_user_error(invoke("submit", "http://exa%mple/x.jpg", "--merchant", "m"), "bad host")
    assert_user_error(invoke("submit", "ftp://x/y.jpg", "--merchant", "m"), "unsupported scheme")
    assert_user_error(invoke("ingest", "ftp://x/y.jpg", "--merchant", "m"), "unsupported scheme")


def test_an_upload_without_a_merchant_is_a_user_mistake(tmp_path: Path) -> None:
    photo = _png(tmp_path / "a.png")
    assert_user_error(invoke("submit", photo), "no merchant for", "give --merchant")
    assert_user_error(invoke("ingest", photo), "no merchant for", "give --merchant")


def test_with_json_an_error_is_a_json_object_on_stdout_too() -> None:
    """What the command says on stderr, a program reading --json gets on stdout; for a bad
    option too (the real entry point, as a shell runs it)."""
    import json
    import subprocess
    import sys

    result = runner.invoke(app, ["submit", "ftp://x/y.jpg", "--merchant", "m", "--json"])
    assert result.exit_code == 2
    body = json.loads(result.stdout)
    assert body["exit_code"] == 2 and "unsupported scheme" in body["error"]
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vitrine.cli.app import main; main()",
            "submit",
            "--bogus",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout) == {"error": "No such option: --bogus", "exit_code": 2}
