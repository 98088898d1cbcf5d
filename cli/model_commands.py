"""`vitrine train`, `vitrine eval`, `vitrine bench`, `vitrine demo`: the model-facing commands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import typer

from cli.output import CliError, emit_json, err_console, friendly, out_console
from pipeline.datasets import DEBIAN_DIR

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def _fashion_dir(path: Path | None) -> Path:
    directory = path or Path(DEBIAN_DIR)
    if not directory.is_dir():
        raise CliError(
            f"Fashion-MNIST not found in {directory}: install Debian's dataset-fashion-mnist "
            "or pass --fashion DIR with the four IDX .gz files"
        )
    return directory


def train(
    out: Path = typer.Option(..., help="Model directory to write (model.json + model.keras)."),
    fashion: Path = typer.Option(None, help="Fashion-MNIST IDX directory (default: Debian's)."),
    data: Path = typer.Option(None, help="Your own labelled folder: one subfolder per class."),
    epochs: int = typer.Option(None, help="Training epochs (default: the recipe's)."),
    seed: int = typer.Option(1234),
    limit: int = typer.Option(None, help="Train on this many images only (smoke tests)."),
    widths: str = typer.Option("64,128,256", help="CNN stage widths."),
    embedding_dim: int = typer.Option(128, help="Embedding size (the vector stored in pgvector)."),
    blur: float = typer.Option(0.0, help="Share of training images softened (photo look)."),
    gamma: float = typer.Option(0.0, help="Share of training images with changed mid-tones."),
    backbone: str = typer.Option(None, help="MobileNetV3Small or EfficientNetB0 (with --data)."),
    weights: Path = typer.Option(None, help="Backbone weights file (ImageNet notop .weights.h5)."),
    input_size: int = typer.Option(
        None, help="Input size for --data (default 28, 96 w/ backbone)."
    ),
    name: str = typer.Option(None, help="Model name (default fashion-cnn or the folder's name)."),
    version: str = typer.Option("1"),
    json_out: bool = JSON,
) -> None:
    """Train a model: Fashion-MNIST by default, or your own taxonomy with --data."""
    from pipeline.train import Augmentation, TrainConfig, train_fashion_mnist

    if weights and not backbone:
        raise CliError("--weights needs --backbone (MobileNetV3Small or EfficientNetB0)")
    if weights and not weights.is_file():
        raise CliError(f"weights file {weights} not found")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CliError(
            f"{out} exists and is not an empty directory; choose a new --out "
            "(models are never overwritten)"
        )
    cfg_kwargs: dict[str, object] = {"seed": seed, "train_limit": limit}
    try:
        cfg_kwargs["widths"] = tuple(int(w) for w in widths.split(","))
    except ValueError:
        raise CliError(
            f"--widths takes comma-separated integers like 64,128,256, not {widths!r}"
        ) from None
    if (backbone or input_size) and data is None:
        raise CliError("--backbone and --input-size apply to --data (your own labelled folder)")
    cfg_kwargs["embedding_dim"] = embedding_dim
    cfg_kwargs["augmentation"] = Augmentation(blur_probability=blur, gamma_probability=gamma)
    if epochs:
        cfg_kwargs["epochs"] = epochs
    verbose = 2
    if data is not None:
        spec = _train_folder(
            data, out, TrainConfig(**cfg_kwargs), backbone, weights, input_size, name, version
        )  # type: ignore[arg-type]
    else:
        from pipeline.datasets import load_fashion_mnist

        ds = load_fashion_mnist(_fashion_dir(fashion))
        spec = train_fashion_mnist(
            x_train=ds.x_train,
            y_train=ds.y_train,
            x_test=ds.x_test,
            y_test=ds.y_test,
            fingerprint=ds.fingerprint,
            out_dir=out,
            config=TrainConfig(**cfg_kwargs),  # type: ignore[arg-type]
            name=name or "fashion-cnn",
            version=version,
            log=lambda m: err_console.print(m, highlight=False),
            verbose=verbose,
        )
    if json_out:
        emit_json(
            {
                "model": spec.key,
                "out": str(out),
                "metrics": spec.metrics,
                "train_seconds": spec.training.get("train_seconds"),
            }
        )
    else:
        out_console.print(f"wrote {spec.key} to {out}: {spec.metrics}")


def _train_folder(data, out, config, backbone, weights, input_size, name, version):  # type: ignore[no-untyped-def]
    from pipeline.datasets import load_labelled_folder
    from pipeline.preprocess import BadImageError, preprocess_bytes
    from pipeline.train import train_folder
    from pipeline.types import PreprocessSpec
    from worker.settings import get_settings

    settings = get_settings()
    paths, labels, class_names = load_labelled_folder(data)
    if len(class_names) < 2 or len(paths) < 2:
        raise CliError(f"{data} needs at least two class subfolders with images in them")
    if backbone:
        spec = PreprocessSpec(
            size=input_size or 96,
            channels=3,
            invert=False,
            trim_background=True,
            autocontrast=False,
            scale=1.0,
            offset=0.0,
        )
    else:
        spec = PreprocessSpec(size=input_size or 28)
    digest = hashlib.sha256()
    arrays, ys = [], []
    for path, y in zip(paths, labels, strict=True):
        raw = path.read_bytes()
        digest.update(raw)
        try:
            array, _ = preprocess_bytes(
                raw, spec, max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes
            )
        except BadImageError as exc:
            err_console.print(f"skipping {path}: {exc}")
            continue
        arrays.append(array)
        ys.append(y)
    return train_folder(
        images=np.stack(arrays),
        labels=np.array(ys),
        class_names=class_names,
        preprocess=spec,
        fingerprint="sha256:" + digest.hexdigest(),
        out_dir=out,
        config=config,
        backbone=backbone,
        weights_path=str(weights) if weights else None,
        name=name or Path(data).name,
        version=version,
        log=lambda m: err_console.print(m, highlight=False),
    )


def evaluate(
    model: Path = typer.Option(None, help="Model directory (default: the shipped model)."),
    data_dir: Path = typer.Option(
        None, "--data", help="Fashion-MNIST IDX directory (default: Debian's)."
    ),
    images: Path = typer.Option(None, help="Directory of photos to evaluate on."),
    manifest: Path = typer.Option(None, help="CSV with file,label columns (with --images)."),
    retrieval: bool = typer.Option(True, help="Retrieval metrics: test queries vs train gallery."),
    hnsw: bool = typer.Option(True, help="Also measure retrieval through pgvector HNSW."),
    k: int = typer.Option(10, "-k"),
    gallery_limit: int = typer.Option(
        None, help="Use only the first N training images as gallery."
    ),
    report: Path = typer.Option(None, help="Write confusion-matrix and neighbour PNGs here."),
    json_out: bool = JSON,
) -> None:
    """Accuracy, per-class precision/recall and retrieval quality."""
    from ops.evaluation import evaluate as run_eval
    from pipeline.model import load_model_dir
    from worker.settings import get_settings

    if (images is None) != (manifest is None):
        raise CliError("--images and --manifest go together")
    data = None
    if images is None:
        from pipeline.datasets import load_fashion_mnist

        data = load_fashion_mnist(_fashion_dir(data_dir))
    loaded = load_model_dir(model or get_settings().model_dir)

    def run(conn: object | None) -> dict[str, object]:
        return run_eval(
            loaded,
            data=data,
            images=images,
            manifest=manifest,
            retrieval=retrieval,
            k=k,
            gallery_limit=gallery_limit,
            hnsw_conn=conn,
            report_dir=report,
        )

    if retrieval and hnsw and data is not None:
        from ops.context import open_context

        with open_context(migrate=False).engine.begin() as conn:
            result = run(conn)
    else:
        result = run(None)
    if json_out:
        emit_json(result)
        return
    out_console.print(
        f"model {result['model']}: accuracy {result['accuracy']:.4f} on {result['n']} images"
    )
    for label, m in result["per_class"].items():
        out_console.print(f"  {label:12s} precision {m['precision']:.3f} recall {m['recall']:.3f}")
    if "retrieval" in result:
        out_console.print(f"retrieval: {result['retrieval']}")


def photos(
    out: Path = typer.Argument(..., help="Directory to write the photos and manifest.csv into."),
    n: int = typer.Option(2000, help="How many photos."),
    seed: int = typer.Option(2024),
    fashion: Path = typer.Option(None, help="Fashion-MNIST directory (default: Debian's)."),
    sample: bool = typer.Option(False, help="Use the small slice shipped in the repo."),
) -> None:
    """Make a merchant-like photo set from the test split, for `eval --images/--manifest`."""
    from ops.demo import write_photos
    from pipeline.datasets import load_fashion_mnist
    from worker.settings import SAMPLE_FASHION_DIR

    ds = load_fashion_mnist(SAMPLE_FASHION_DIR if sample else _fashion_dir(fashion))
    manifest = write_photos(ds, out, n=n, seed=seed)
    out_console.print(f"wrote {n} photos and {manifest}")


def register(app: typer.Typer) -> None:
    app.command()(friendly(train))
    app.command()(friendly(photos))
    app.command("eval")(friendly(evaluate))
    from ops import bench, demo

    app.command()(friendly(demo.demo))
    app.command()(friendly(bench.bench))
