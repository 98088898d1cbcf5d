"""`submit`, `ingest`, `backfill`, `requeue`: commands that put work on the queues."""

from __future__ import annotations

from pathlib import Path

import typer

from vitrine.cli.options import BATCH_SIZE, JSON, WORKERS
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
from vitrine.ops import ingest as ops_ingest
from vitrine.ops.context import open_context
from vitrine.ops.errors import UserError
from vitrine.ops.ingest import RunReport
from vitrine.ops.uploads import MERCHANT_RULE, collect_uploads, finish_uploads, read_manifest

RULES = (
    f"{MERCHANT_RULE} Each upload is an event named by its merchant, SKU and file: the same "
    "command run again records nothing twice; another SKU or merchant for the same file is "
    "another listing."
)


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


def _warn_unknown_categories(unknown: list[str]) -> None:
    """Say which declared categories are none of the active model's labels: they are kept
    as sent, but view label_mismatches cannot compare them."""
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5])
        err_console.print(
            f"declared categories not among the model's labels (kept as sent, not compared): "
            f"{shown}"
        )


def register(app: typer.Typer) -> None:
    @app.command(help=f"Queue uploads, one event per image as the platform sends them. {RULES}")
    @friendly
    def submit(
        sources: list[str] = typer.Argument(
            ..., help="Image files, folders (their manifest.csv if any) or http(s):// URLs."
        ),
        merchant: str = typer.Option(
            None, "--merchant", help="Merchant of every upload (see the rule above)."
        ),
        sku: str = typer.Option(None, "--sku", help="SKU (only with a single image)."),
        declared_label: str = typer.Option(
            None, "--declared-label", help="The merchant's category, e.g. Dress (any text)."
        ),
        wait: bool = typer.Option(False, "--wait", help="Return when every image is done."),
        timeout: float = typer.Option(600.0, "--timeout", help="Seconds --wait waits at most."),
        json_out: bool = JSON,
    ) -> None:
        uploads = collect_uploads(
            sources, merchant=merchant, sku=sku, declared_label=declared_label
        )
        ctx = open_context()
        _warn_unknown_categories(ops_ingest.unknown_categories(ctx, uploads))
        if wait and not ops_ingest.workers_online(ctx):
            err_console.print("no worker answered yet; waiting anyway (start one: vitrine worker)")
        result = ops_ingest.submit(ctx, uploads, wait=wait, timeout=timeout, progress=progress_bar)
        ids = result.image_ids
        received = result.received.as_dict()
        if result.images is None:
            if json_out:
                emit_json({**received, "image_ids": ids})
            else:
                shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
                again = received["already_received"]
                note = f" ({again} received before: not queued again)" if again else ""
                out_console.print(f"queued {len(ids)} upload(s){note}: image ids {shown}")
            return
        rows = [result.images[i].as_result() for i in ids]
        counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed")}
        if json_out:
            emit_json({**received, "image_ids": ids, **counts, "results": rows})
        else:
            out_console.print(
                table(
                    ("id", "file", "status", "label", "by", "confidence", "error"),
                    [
                        (
                            r["image_id"],
                            Path(str(r["uri"])).name,
                            r["status"],
                            r["label"],
                            r["label_source"],
                            f"{r['confidence']:.3f}" if r["confidence"] is not None else None,
                            r["error"],
                        )
                        for r in rows
                    ],
                )
            )
        if counts["failed"]:
            raise typer.Exit(EXIT_FAILED)

    @app.command(help=f"Bulk-load a catalog: register every image, process in batches. {RULES}")
    @friendly
    def ingest(
        sources: list[str] = typer.Argument(
            None, help="Image files, folders (their manifest.csv if any) or http(s):// URLs."
        ),
        manifest: Path = typer.Option(
            None, "--manifest", help="CSV with a file or uri column (and sku, merchant_id)."
        ),
        merchant: str = typer.Option(
            None, "--merchant", help="Merchant of every upload (see the rule above)."
        ),
        workers: int = WORKERS,
        concurrency: int = typer.Option(None, "--concurrency", min=1, help="Processes per worker."),
        batch_size: int = BATCH_SIZE,
        json_out: bool = JSON,
    ) -> None:
        if manifest:
            base = Path(sources[0]) if sources else None
            uploads = finish_uploads(read_manifest(manifest, base=base), merchant=merchant)
        elif sources:
            uploads = collect_uploads(sources, merchant=merchant)
        else:
            raise UserError("give image paths, folders or URLs, or --manifest CSV")
        ctx = open_context()
        _warn_unknown_categories(ops_ingest.unknown_categories(ctx, uploads))
        report = ops_ingest.ingest(
            ctx,
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
        hashes: bool = typer.Option(
            False,
            "--hashes",
            help="Instead: measure the perceptual hash (and quality) again of every done "
            "image without one (after `db upgrade` said the hash recipe changed).",
        ),
        json_out: bool = JSON,
    ) -> None:
        """(Re-)embed every done image that lacks rows for a model. Resumable: rerun it."""
        if hashes:
            report = ops_ingest.rehash(
                open_context(),
                workers=workers,
                batch_size=batch_size,
                max_in_flight=max_in_flight,
                progress=progress_bar,
            )
            _finish(report, json_out, "backfill --hashes")
            return
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
