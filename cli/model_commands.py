"""`train`, `eval`, `photos`, `bench`, `demo`: the commands about the model and its data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from vitrine.cli.options import JSON
from vitrine.cli.output import (
    EXIT_FAILED,
    emit_json,
    err_console,
    friendly,
    key_values,
    out_console,
    progress_bar,
    table,
)
from vitrine.ops.context import open_context
from vitrine.ops.errors import UserError
from vitrine.settings import get_settings

if TYPE_CHECKING:
    from vitrine.pipeline.types import ModelSpec


def _log(message: str) -> None:
    err_console.print(message)


def _train_corrections(
    out: Path,
    init: Path | None,
    fashion: Path | None,
    epochs: int | None,
    seed: int,
    learning_rate: float | None,
    version: str | None,
    json_out: bool,
) -> None:
    """`train --corrections`: the new model and the before/after table the operator
    decides on (the model is written, never registered or activated)."""
    from vitrine.ops.corrections import CorrectionsRequest, train_on_corrections

    request = CorrectionsRequest(
        out=out,
        init=init,
        fashion=fashion,
        epochs=epochs,
        seed=seed,
        learning_rate=learning_rate,
        version=version,
    )
    result = train_on_corrections(open_context(), request, log=_log)
    summary = {
        "model": result.spec.key,
        "base": result.base,
        "out": str(out),
        "corrections": result.corrections,
        "relabelled": result.relabelled,
        "replay": result.replay,
        "skipped": result.skipped,
        "compare": result.compare,
        "train_seconds": result.spec.training.get("train_seconds"),
    }
    if json_out:
        emit_json(summary)
        return

    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    rows = [
        (what, c["n"], shown(c["before"]), shown(c["after"])) for what, c in result.compare.items()
    ]
    out_console.print(table(("accuracy on", "images", result.base, result.spec.key), rows))
    out_console.print(
        f"wrote {out} (not registered: `vitrine models add {out}`, then "
        "`vitrine models activate` if the figures say so)"
    )


def _print_trained(spec: ModelSpec, out: Path, json_out: bool) -> None:
    summary = {
        "model": spec.key,
        "out": str(out),
        "metrics": spec.metrics,
        "train_seconds": spec.training.get("train_seconds"),
    }
    if json_out:
        emit_json(summary)
    else:
        out_console.print(key_values({**summary, **spec.metrics}, title="trained"))


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def train(
        out: Path = typer.Option(None, "--out", help="Model directory to write."),
        resume: Path = typer.Option(
            None, "--resume", help="Go on with the run stopped in this directory, exactly."
        ),
        architecture: str = typer.Option(
            "cnn", "--architecture", help="Fashion-MNIST network: cnn, resnet20 or resnet32."
        ),
        precision: str = typer.Option(
            "auto", "--precision", help="auto (bf16 where the CPU has bf16 units), bf16, fp32."
        ),
        fashion: Path = typer.Option(
            None, "--fashion", help="Fashion-MNIST IDX directory (default: Debian's)."
        ),
        data: Path = typer.Option(
            None, "--data", help="Your own labelled folder: one subfolder per class."
        ),
        epochs: int = typer.Option(None, "--epochs", min=1, help="Default: the recipe's."),
        seed: int = typer.Option(1234, "--seed"),
        limit: int = typer.Option(None, "--limit", min=1, help="Train on this many images."),
        widths: str = typer.Option("64,128,256", "--widths", help="CNN stage widths."),
        embedding_dim: int = typer.Option(
            128, "--embedding-dim", min=1, help="Embedding size (the vector in pgvector)."
        ),
        blur: float = typer.Option(0.0, "--blur", help="Share of images softened."),
        gamma: float = typer.Option(0.0, "--gamma", help="Share with changed mid-tones."),
        tilt: float = typer.Option(
            0.0, "--tilt", min=0.0, max=1.0, help="Share tilted (+-15 deg) and zoomed (0.8-1.1)."
        ),
        jpeg: float = typer.Option(
            0.0, "--jpeg", min=0.0, max=1.0, help="Share with JPEG blocks (quality 30-90)."
        ),
        photo_views: int = typer.Option(
            0,
            "--photo-views",
            min=0,
            help="Also train on this many items as photos, read back as the worker reads them.",
        ),
        ema: float = typer.Option(
            None,
            "--ema",
            help="Save the weights' moving average, this momentum per step (like 0.999).",
        ),
        backbone: str = typer.Option(
            None,
            "--backbone",
            help="With --data: cnn (default; from scratch, 28 px grey), lite0 (EfficientNet-Lite0, "
            "ImageNet weights shipped), or MobileNetV3Small/EfficientNetB0 with --weights.",
        ),
        weights: Path = typer.Option(
            None, "--weights", help="Backbone weights file (ImageNet notop .weights.h5)."
        ),
        input_size: int = typer.Option(
            None,
            "--input-size",
            min=8,
            help="Input size for --data (28; lite0 160; 96 with another backbone).",
        ),
        init: Path = typer.Option(
            None, "--init", help="Fine-tune this model directory (--corrections: or `active`)."
        ),
        learning_rate: float = typer.Option(
            None, "--learning-rate", min=0.0, help="Default 2e-3; --init 2e-4; --corrections 1e-3."
        ),
        name: str = typer.Option(None, "--name", help="Model name (default: fashion-cnn)."),
        version: str = typer.Option(
            None, "--version", help="Default: 1 (--corrections: the base's + .cTIMESTAMP)."
        ),
        corrections: bool = typer.Option(
            False,
            "--corrections",
            help="Fine-tune the active model (or --init) on the "
            "review desk's corrections plus replayed training data; prints before/after.",
        ),
        json_out: bool = JSON,
    ) -> None:
        """Train a model: Fashion-MNIST by default, or your own taxonomy with --data."""
        from vitrine.ops.training import AlreadyTrained, TrainRequest, resumed_request
        from vitrine.ops.training import train as run_training

        if resume is not None:
            if out is not None or data or init or corrections or epochs or limit or backbone:
                raise UserError(
                    "--resume goes on with the run as it was started: give it alone "
                    "(or with --fashion, where the data moved)"
                )
            try:
                request = resumed_request(resume, fashion)
            except AlreadyTrained as finished:
                err_console.print(f"{resume} has finished training: nothing to resume")
                _print_trained(finished.spec, resume, json_out)
                return
            spec = run_training(request, limits=get_settings().image_limits, log=_log, resume=True)
            _print_trained(spec, resume, json_out)
            return
        if out is None:
            raise UserError("--out DIR names the model directory to write (or --resume DIR)")
        if corrections:
            if data or backbone or weights or input_size or limit or name or ema is not None:
                raise UserError(
                    "--corrections fine-tunes a Fashion-MNIST model; "
                    "--data, --backbone, --weights, --input-size, --limit, --name and "
                    "--ema do not apply"
                )
            _train_corrections(out, init, fashion, epochs, seed, learning_rate, version, json_out)
            return
        version = version or "1"
        request = TrainRequest(
            out=out,
            fashion=fashion,
            data=data,
            epochs=epochs,
            seed=seed,
            limit=limit,
            widths=widths,
            embedding_dim=embedding_dim,
            blur=blur,
            gamma=gamma,
            tilt=tilt,
            jpeg=jpeg,
            init=init,
            learning_rate=learning_rate,
            backbone=backbone,
            weights=weights,
            input_size=input_size,
            name=name,
            version=version,
            architecture=architecture,
            precision=precision,
            photo_views=photo_views,
            ema=ema,
        )
        spec = run_training(request, limits=get_settings().image_limits, log=_log)
        _print_trained(spec, out, json_out)

    @app.command("eval")
    @friendly
    def evaluate(
        model: Path = typer.Option(None, "--model", help="Model directory (default: shipped)."),
        data_dir: Path = typer.Option(
            None, "--data", help="Fashion-MNIST IDX directory (default: Debian's)."
        ),
        images: Path = typer.Option(None, "--images", help="A folder of photos."),
        manifest: Path = typer.Option(
            None, "--manifest", help="CSV with file,label columns (with --images)."
        ),
        retrieval: bool = typer.Option(
            True, "--retrieval/--no-retrieval", help="Test queries vs the training gallery."
        ),
        hnsw: bool = typer.Option(
            True, "--hnsw/--no-hnsw", help="Also measure retrieval through pgvector HNSW."
        ),
        k: int = typer.Option(10, "-k", min=1),
        gallery_limit: int = typer.Option(
            None, "--gallery-limit", min=1, help="Only the first N training images as gallery."
        ),
        report: Path = typer.Option(
            None, "--report", help="Write confusion-matrix and neighbour PNGs here."
        ),
        corrections: bool = typer.Option(
            False, "--corrections", help="Also the accuracy on the review desk's corrections."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Accuracy, per-class precision/recall and retrieval quality."""
        from vitrine.ops.evaluation import EvalRequest, run_eval

        request = EvalRequest(
            model=model,
            data=data_dir,
            images=images,
            manifest=manifest,
            retrieval=retrieval,
            hnsw=hnsw,
            k=k,
            gallery_limit=gallery_limit,
            report=report,
        )
        ctx = open_context()
        result = run_eval(ctx, request)
        if corrections:
            from vitrine.ops.corrections import corrections_accuracy

            result["corrections"] = corrections_accuracy(ctx, model or ctx.settings.model_dir)
        if json_out:
            emit_json(result)
            return
        if "accuracy" in result:
            accuracy, n = result["accuracy"], result["n"]
            out_console.print(f"model {result['model']}: accuracy {accuracy:.4f} on {n} images")
        if result.get("unknown_rate") is not None:
            flat = {k: v for k, v in result.items() if k.startswith("unknown_")}
            out_console.print(key_values(flat, title="none of the model's categories"))
        if "per_class" not in result:
            return
        out_console.print(
            table(
                ("class", "precision", "recall", "support"),
                [
                    (label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", m["support"])
                    for label, m in result["per_class"].items()
                ],
            )
        )
        if "retrieval" in result:
            flat = {k: v for k, v in result["retrieval"].items() if not isinstance(v, dict)}
            out_console.print(key_values(flat, title="retrieval"))
        if "corrections" in result:
            flat = {k: v for k, v in result["corrections"].items() if k != "skipped"}
            out_console.print(key_values(flat, title="corrected items"))
        if "report" in result:
            out_console.print(f"pictures: {result['report']}")

    @app.command()
    @friendly
    def photos(
        out: Path = typer.Argument(..., help="Folder to write the photos and manifest.csv into."),
        n: int = typer.Option(2000, "--n", min=1, help="How many photos."),
        seed: int = typer.Option(None, "--seed", help="Default: 2024 (merchant), 2025 (studio)."),
        style: str = typer.Option(
            "merchant",
            "--style",
            help="merchant (white/transparent), studio (backdrops, tilt), or foreign (none of "
            "the categories: household, electronics, documents, food, plants, textures, scenes).",
        ),
        fashion: Path = typer.Option(
            None, "--fashion", help="Fashion-MNIST directory (default: Debian's)."
        ),
        sample: bool = typer.Option(False, "--sample", help="Use the slice shipped in the repo."),
    ) -> None:
        """Make merchant-like photos of test items (or of foreign things), for `eval --images`."""
        from vitrine.ops.data import fashion_mnist
        from vitrine.ops.demo import write_photos

        data = fashion_mnist(fashion, sample=sample or style == "foreign")
        manifest = write_photos(data, out, n=n, seed=seed, style=style, progress=progress_bar)
        out_console.print(f"wrote {n} {style} photos and {manifest}")

    @app.command()
    @friendly
    def demo(
        n: int = typer.Option(300, "--n", min=1, help="How many sample product photos."),
        workers: int = typer.Option(1, "--workers", min=0, help="Worker processes to start."),
        seed: int = typer.Option(7, "--seed"),
        out: Path = typer.Option(None, "--out", help="Photos and PNGs (default DATA_DIR/demo)."),
        json_out: bool = JSON,
    ) -> None:
        """Write a sample catalog, ingest it, print labels and nearest neighbours."""
        from vitrine.cli.demo_view import print_demo
        from vitrine.ops.demo import run_demo

        if out is not None and out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder")
        report = run_demo(
            open_context(), n=n, workers=workers, seed=seed, out=out, progress=progress_bar
        )
        print_demo(report, json_out)
        if report.summary.failed:
            raise typer.Exit(EXIT_FAILED)
