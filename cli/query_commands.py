"""`similar`, `status`, `models`: commands that read (a SELECT-only role is enough),
and `models add|activate`, which change only the model registry."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from vitrine.cli.options import JSON
from vitrine.cli.output import emit_json, err_console, friendly, key_values, out_console, table
from vitrine.cli.server_commands import print_services
from vitrine.ops import catalog
from vitrine.ops import models as ops_models
from vitrine.ops.context import open_context
from vitrine.ops.errors import UserError
from vitrine.pipeline.types import UNKNOWN_LABEL
from vitrine.settings import get_settings

models_app = typer.Typer(no_args_is_help=True, help="Registered model versions.")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

    @app.command()
    @friendly
    def similar(
        image_id: int = typer.Argument(None, min=1, help="An images.id"),
        image: Path = typer.Option(
            None, "--image", help="Or a photo file, in the catalog or not: search by photo."
        ),
        k: int = typer.Option(10, "-k", min=1, help="How many neighbours."),
        merchant: str = typer.Option(None, "--merchant", help="Only this merchant's images."),
        label: str = typer.Option(None, "--label", help="Only images with this label."),
        png: Path = typer.Option(None, "--png", help="Write a contact sheet of them here."),
        json_out: bool = JSON,
    ) -> None:
        """The k images most similar to one image or photo (active model, HNSW index)."""
        if (image_id is None) == (image is None):
            raise UserError("give an IMAGE_ID or --image FILE (one of them)")
        filters = catalog.SearchFilters(merchant_id=merchant, label=label)
        if image is not None:
            found = catalog.similar_to_photo(
                open_context(), photo=image, k=k, png=png, filters=filters
            )
            _show_photo_search(found, json_out)
            return
        report = catalog.similar(open_context(), image_id=image_id, k=k, png=png, filters=filters)
        if json_out:
            emit_json(
                {
                    "image_id": report.image_id,
                    "sql": report.sql,
                    "neighbours": report.neighbours,
                    "note": report.note,
                    "contact_sheet": str(report.sheet) if report.sheet else None,
                }
            )
            return
        out_console.print(report.sql, style="dim")
        _print_neighbours(report.neighbours, report.sheet, report.note)

    @app.command()
    @friendly
    def status(json_out: bool = JSON) -> None:
        """Images by status and label, the models, the servers."""
        report = catalog.status(open_context())
        models = [
            {"key": m.key, "active": m.is_active, "embeddings": m.n_embeddings}
            for m in report.models
        ]
        if json_out:
            emit_json(
                {
                    "images": report.images,
                    "labels": dict(report.labels),
                    "models": models,
                    "services": report.services,
                }
            )
            return
        out_console.print(key_values(report.images, title="images by status"))
        out_console.print(table(("label", "images"), report.labels, title="labels (active model)"))
        out_console.print(
            table(
                ("model", "active", "embeddings"),
                [(m["key"], "*" if m["active"] else "", m["embeddings"]) for m in models],
                title="models",
            )
        )
        print_services(report.services)

    @models_app.command("list")
    @friendly
    def models_list(json_out: bool = JSON) -> None:
        """Registered models; the active one serves new uploads and similarity."""
        rows = ops_models.list_models(open_context().engine())
        if json_out:
            emit_json(
                {
                    "models": [
                        {
                            "key": r.key,
                            "active": r.is_active,
                            "embedding_dim": r.embedding_dim,
                            "path": r.path,
                            "embeddings": r.n_embeddings,
                        }
                        for r in rows
                    ]
                }
            )
            return
        out_console.print(
            table(
                ("model", "active", "dim", "embeddings", "path"),
                [
                    (r.key, "*" if r.is_active else "", r.embedding_dim, r.n_embeddings, r.path)
                    for r in rows
                ],
            )
        )

    @models_app.command("add")
    @friendly
    def models_add(
        directory: Path = typer.Argument(..., help="A model directory (model.json + .keras)."),
    ) -> None:
        """Register a model directory (inactive unless no model is active)."""
        ops_models.check_model_dir(directory)  # before any server is touched
        key = ops_models.register_model_dir(open_context().engine(), directory)
        out_console.print(f"registered {key} from {directory}")

    @models_app.command("calibrate-unknown")
    @friendly
    def models_calibrate_unknown(
        directory: Path = typer.Argument(..., help="A model directory (model.json + .keras)."),
        fashion: Path = typer.Option(
            None, "--fashion", help="Fashion-MNIST IDX files (default: Debian's)."
        ),
        reference: int = typer.Option(6000, "--reference", help="Photos the centroids learn."),
        calibration: int = typer.Option(
            2000, "--calibration", help="Other photos that set the threshold."
        ),
        view_size: int = typer.Option(
            160, "--view-size", help="Side of the object view the backbone reads, px."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Give a Fashion-MNIST model its "none of our categories" detector (unknown.npz):
        generated photos of training items, EfficientNet-Lite0 features; minutes."""
        from vitrine.ops.unknown import calibrate

        done = calibrate(
            directory,
            fashion=fashion,
            reference=reference,
            calibration=calibration,
            limits=get_settings().image_limits,
            log=lambda line: err_console.print(line),
            view_size=view_size,
        )
        if json_out:
            emit_json(done)
            return
        out_console.print(
            f"{directory}: threshold {done.threshold:.4f} from {done.reference_photos} + "
            f"{done.calibration_photos} photos in {done.seconds:.0f} s (unknown.npz, model.json)"
        )

    @models_app.command("activate")
    @friendly
    def models_activate(
        name: str = typer.Argument(..., help="Model name@version, or a name."),
    ) -> None:
        """Switch the active model atomically."""
        row = ops_models.activate(open_context().engine(), name)
        out_console.print(f"active model: {row.key}")


def _show_photo_search(found: catalog.PhotoSearch, json_out: bool) -> None:
    if json_out:
        emit_json(
            {
                "photo": str(found.photo),
                "model": found.model,
                "label": found.label,
                "confidence": round(found.confidence, 4),
                "unknown_score": found.unknown_score,
                "neighbours": found.neighbours,
                "note": found.note,
                "contact_sheet": str(found.sheet) if found.sheet else None,
            }
        )
        return
    if found.label == UNKNOWN_LABEL:  # the confidence is a best guess's, which no one reads
        score = f", unknown score {found.unknown_score:.2f}" if found.unknown_score else ""
        out_console.print(f"{found.photo}: none of {found.model}'s categories (unknown{score})")
    else:
        out_console.print(f"{found.photo}: {found.label} ({found.confidence:.2f}, {found.model})")
    _print_neighbours(found.neighbours, found.sheet, found.note)


def _print_neighbours(
    neighbours: Sequence[catalog.Neighbour], sheet: Path | None, note: str | None
) -> None:
    if note:
        out_console.print(note)
    rows = [
        (n.image_id, n.label, f"{n.distance:.4f}", n.merchant_id, n.sku, n.uri) for n in neighbours
    ]
    if rows:
        out_console.print(table(("image", "label", "distance", "merchant", "sku", "uri"), rows))
    if sheet:
        out_console.print(f"contact sheet: {sheet}")
