"""`submit`, `ingest`, `backfill`, `requeue`: commands that put work on the queues."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.options import BATCH_SIZE, JSON, WORKERS
from cli.output import (
    EXIT_FAILED,
    emit_json,
    err_console,
    friendly,
    key_values,
    out_console,
    progress_bar,
    table,
)
from ops import ingest as ops_ingest
from ops.context import open_context
from ops.errors import UserError
from ops.ingest import RunReport
from ops.uploads import collect_uploads, read_manifest


def _finish(report: RunReport, json_out: bool, title: str) -> None:
    """Print a run's counts; exit 1 when any image failed."""
    if json_out:
        emit_json(report.as_dict())
    else:
        out_console.print(key_values(report.as_dict(), title=title))
        for image_id, error in list(report.summary.errors.items())[:10]:
            err_console.print(f"image {image_id} failed: {error}")
    if report.summary.failed:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def submit(
        sources: list[str] = typer.Argument(
            ..., help="Image files, folders (their manifest.csv if any) or http(s):// URLs."
        ),
        merchant: str = typer.Option(..., "--merchant", help="Merchant the uploads belong to."),
        sku: str = typer.Option(None, "--sku", help="SKU (only with a single image)."),
        declared_label: str = typer.Option(
            None, "--declared-label", help="The merchant's category, e.g. Dress (any text)."
        ),
        wait: bool = typer.Option(False, "--wait", help="Return when every image is done."),
        timeout: float = typer.Option(600.0, "--timeout", help="Seconds --wait waits at most."),
        json_out: bool = JSON,
    ) -> None:
        """Queue uploads, one event per image as the platform sends them."""
        uploads = collect_uploads(
            sources, merchant=merchant, sku=sku, manifest_merchants=False,
            declared_label=declared_label,
        )  # fmt: skip
        ctx = open_context()
        if wait and not ops_ingest.workers_online(ctx):
            err_console.print("no worker answered yet; waiting anyway (start one: vitrine worker)")
        result = ops_ingest.submit(ctx, uploads, wait=wait, timeout=timeout, progress=progress_bar)
        if result.images is None:
            ids = result.image_ids
            if json_out:
                emit_json({"submitted": len(ids), "image_ids": ids})
            else:
                shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
                out_console.print(f"queued {len(ids)} upload(s): image ids {shown}")
            return
        rows = [
            {
                "image_id": i,
                "uri": result.images[i].uri,
                "status": result.images[i].status,
                "label": result.images[i].label,
                "confidence": result.images[i].confidence,
                "error": result.images[i].error,
            }
            for i in result.image_ids
        ]
        if json_out:
            emit_json({"images": rows})
        else:
            out_console.print(
                table(
                    ("id", "file", "status", "label", "confidence", "error"),
                    [
                        (
                            r["image_id"],
                            Path(str(r["uri"])).name,
                            r["status"],
                            r["label"],
                            f"{r['confidence']:.3f}" if r["confidence"] is not None else None,
                            r["error"],
                        )
                        for r in rows
                    ],
                )
            )
        if any(r["status"] == "failed" for r in rows):
            raise typer.Exit(EXIT_FAILED)

    @app.command()
    @friendly
    def ingest(
        sources: list[str] = typer.Argument(
            None, help="Image files, folders (their manifest.csv if any) or http(s):// URLs."
        ),
        manifest: Path = typer.Option(
            None, "--manifest", help="CSV with a file or uri column (and sku, merchant_id)."
        ),
        merchant: str = typer.Option(
            "catalog", "--merchant", help="Merchant for rows that name none."
        ),
        workers: int = WORKERS,
        concurrency: int = typer.Option(None, "--concurrency", min=1, help="Processes per worker."),
        batch_size: int = BATCH_SIZE,
        json_out: bool = JSON,
    ) -> None:
        """Bulk-load a catalog: register every image, process in batches, show progress."""
        if manifest:
            base = Path(sources[0]) if sources else None
            uploads = read_manifest(manifest, merchant=merchant, base=base)
        elif sources:
            uploads = collect_uploads(sources, merchant=merchant, manifest_merchants=True)
        else:
            raise UserError("give image paths, folders or URLs, or --manifest CSV")
        report = ops_ingest.ingest(
            open_context(),
            uploads,
            workers=workers,
            concurrency=concurrency,
            batch_size=batch_size,
            progress=progress_bar,
        )
        _finish(report, json_out, "ingest")

    @app.command()
    @friendly
    def backfill(
        model: str = typer.Option(
            None, "--model", help="Model name@version (default: the active one)."
        ),
        activate: bool = typer.Option(
            False, "--activate", help="Make the model active once every image has it."
        ),
        workers: int = WORKERS,
        batch_size: int = BATCH_SIZE,
        max_in_flight: int = typer.Option(
            4, "--max-in-flight", min=1, help="Chunks queued at once (keeps uploads flowing)."
        ),
        json_out: bool = JSON,
    ) -> None:
        """(Re-)embed every done image that lacks rows for a model. Resumable: rerun it."""
        report = ops_ingest.backfill(
            open_context(),
            model=model,
            activate=activate,
            workers=workers,
            batch_size=batch_size,
            max_in_flight=max_in_flight,
            progress=progress_bar,
        )
        _finish(report, json_out, f"backfill {report.model}")

    @app.command()
    @friendly
    def requeue(
        older_than: float = typer.Option(
            600.0, "--older-than", min=0, help="Seconds an image may stay pending/processing."
        ),
        workers: int = WORKERS,
        json_out: bool = JSON,
    ) -> None:
        """Send again uploads stuck in pending/processing (lost messages); safe to repeat."""
        report = ops_ingest.requeue(
            open_context(), older_than_s=older_than, workers=workers, progress=progress_bar
        )
        _finish(report, json_out, "requeue")
