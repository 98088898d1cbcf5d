"""The `vitrine` command. Each command parses arguments and calls into real logic."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import typer
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import ResultSet
from rich.table import Table

from cli import model_commands as cli_model
from cli.output import (
    CliError,
    emit_json,
    err_console,
    friendly,
    out_console,
    print_result,
)
from db import repository
from db.migrate import current_revision
from embedded.launcher import service_env
from embedded.services import services_status, stop_services
from ops.context import open_context
from ops.dispatch import collect_files, file_uri, process_items, register_uploads
from pipeline.types import Upload
from worker.celery_app import app as celery_app
from worker.celery_app import worker_argv
from worker.client import submit_upload
from worker.names import BACKFILL_QUEUE, UPLOADS_QUEUE
from worker.processing import WorkItem
from worker.settings import get_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="vitrine: product images -> labels and vectors in PostgreSQL/pgvector.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
services_app = typer.Typer(no_args_is_help=True, help="Embedded PostgreSQL and Redis.")
models_app = typer.Typer(no_args_is_help=True, help="Registered model versions.")
app.add_typer(db_app, name="db")
app.add_typer(services_app, name="services")
app.add_typer(models_app, name="models")
cli_model.register(app)

JSON = typer.Option(False, "--json", help="Print one JSON object on stdout.")
WORKERS = typer.Option(1, help="Local worker processes to start (0: use running workers).")


@db_app.command("upgrade")
@friendly
def db_upgrade() -> None:
    """Create or migrate the schema to the latest revision (idempotent)."""
    ctx = open_context()
    out_console.print(f"database at revision {current_revision(ctx.urls.database_url)}")


@services_app.command("status")
@friendly
def services_status_cmd(json_out: bool = JSON) -> None:
    """Show the embedded servers (nothing is started)."""
    status = services_status(get_settings())
    if json_out:
        emit_json(status)
        return
    for name, info in status.items():
        state = "running" if info.get("running") else "stopped"
        kind = "embedded" if info.get("embedded") else "external"
        out_console.print(f"{name}: {state} ({kind}) {info.get('url') or ''}")


@services_app.command("stop")
@friendly
def services_stop() -> None:
    """Stop the embedded servers; their data stays in the data directory."""
    stopped = stop_services(get_settings())
    out_console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@app.command()
@friendly
def worker(
    concurrency: int = typer.Option(None, help="Processes (default VITRINE_WORKER_CONCURRENCY)."),
    queues: str = typer.Option(f"{UPLOADS_QUEUE},{BACKFILL_QUEUE}", help="Queues to consume."),
    loglevel: str = typer.Option("INFO"),
) -> None:
    """Run a Celery worker (replaces this process)."""
    ctx = open_context()
    argv = worker_argv(
        concurrency=concurrency or ctx.settings.worker_concurrency,
        queues=[q.strip() for q in queues.split(",") if q.strip()],
        loglevel=loglevel,
    )
    os.execvpe(argv[0], argv, service_env(ctx.urls))


@app.command()
@friendly
def submit(
    paths: list[Path] = typer.Argument(..., help="Image files or directories."),
    merchant: str = typer.Option(..., "--merchant", help="Merchant id the uploads belong to."),
    sku: str = typer.Option(None, help="SKU (only with a single file)."),
    wait: bool = typer.Option(False, "--wait", help="Return when every image is done or failed."),
    timeout: float = typer.Option(600.0, help="Seconds --wait waits at most."),
    json_out: bool = JSON,
) -> None:
    """Queue uploads for the workers (one event per image, like the platform sends)."""
    files = collect_files(paths)
    if sku and len(files) > 1:
        raise CliError("--sku applies to one file; got several (use a manifest with `ingest`)")
    ctx = open_context()
    uploads = [Upload(uri=file_uri(f), merchant_id=merchant, sku=sku) for f in files]
    ids = register_uploads(ctx.engine, uploads)
    results = [
        submit_upload(u.uri, merchant_id=merchant, sku=u.sku, image_id=i)
        for u, i in zip(uploads, ids, strict=True)
    ]
    if not wait:
        if json_out:
            emit_json({"submitted": len(ids), "image_ids": ids})
        else:
            out_console.print(
                f"queued {len(ids)} upload(s): image ids {ids[:10]}{'...' if len(ids) > 10 else ''}"
            )
        return
    if not celery_app.control.ping(timeout=2.0, limit=1):
        err_console.print(
            "no worker answered yet; waiting anyway (start one with `vitrine worker`)"
        )
    try:
        ResultSet(results).join(timeout=timeout, propagate=False)
    except CeleryTimeoutError as exc:
        raise CliError(f"not every image finished within {timeout:.0f}s; they stay queued") from exc
    _report_images(ctx.engine, ids, files, json_out)


def _report_images(engine: object, ids: list[int], files: list[Path], json_out: bool) -> None:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        states = repository.statuses(conn, image_ids=ids)
        labels = dict(
            conn.exec_driver_sql(
                "SELECT image_id, label || ' (' || round(confidence::numeric, 3) || ')' "
                "FROM image_labels WHERE image_id = ANY(%(ids)s)",
                {"ids": ids},
            ).all()
        )
    rows = [
        {
            "image_id": i,
            "file": str(f),
            "status": states[i][0],
            "label": labels.get(i),
            "error": states[i][1],
        }
        for i, f in zip(ids, files, strict=True)
    ]
    if json_out:
        emit_json({"images": rows})
        return
    table = Table("id", "file", "status", "label", "error")
    for r in rows:
        table.add_row(
            str(r["image_id"]),
            Path(r["file"]).name,
            r["status"],
            r["label"] or "",
            r["error"] or "",
        )
    out_console.print(table)


def _read_manifest(manifest: Path, images_dir: Path | None, merchant: str) -> list[Upload]:
    base = images_dir or manifest.parent
    try:
        with manifest.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "file" not in reader.fieldnames:
                raise CliError(f"{manifest}: needs a header with a `file` column")
            return [
                Upload(
                    uri=file_uri(base / row["file"]),
                    merchant_id=row.get("merchant_id") or merchant,
                    sku=row.get("sku") or None,
                )
                for row in reader
            ]
    except OSError as exc:
        raise CliError(f"cannot read manifest {manifest}: {exc.strerror}") from exc


@app.command()
@friendly
def ingest(
    paths: list[Path] = typer.Argument(None, help="Image files or directories."),
    manifest: Path = typer.Option(
        None, help="CSV with a `file` column (and optional sku, merchant_id)."
    ),
    merchant: str = typer.Option(
        "catalog", "--merchant", help="Merchant id for files without one."
    ),
    workers: int = WORKERS,
    concurrency: int = typer.Option(None, help="Processes per local worker."),
    batch_size: int = typer.Option(None, help="Images per task (one forward pass)."),
    json_out: bool = JSON,
) -> None:
    """Bulk-load a catalog: register every image, process in batches, show progress."""
    if manifest:
        uploads = _read_manifest(manifest, paths[0] if paths else None, merchant)
    elif paths:
        uploads = [Upload(uri=file_uri(f), merchant_id=merchant) for f in collect_files(paths)]
    else:
        raise CliError("give image paths or --manifest CSV")
    ctx = open_context()
    ids = register_uploads(ctx.engine, uploads)
    items = [WorkItem(image_id=i, uri=u.uri) for i, u in zip(ids, uploads, strict=True)]
    summary = process_items(
        ctx,
        items,
        workers=workers,
        concurrency=concurrency,
        batch_size=batch_size,
        description="ingest",
    )
    if json_out:
        emit_json({"images": len(items), **summary.as_dict()})
    else:
        out_console.print(
            f"ingested {len(items)} image(s): {summary.done} done, {summary.failed} failed, "
            f"{summary.skipped} already done"
        )


@app.command()
@friendly
def backfill(
    model: str = typer.Option(None, help="Model key name@version (default: the active model)."),
    activate: bool = typer.Option(False, help="Make the model active once every image has it."),
    workers: int = WORKERS,
    batch_size: int = typer.Option(None, help="Images per task."),
    max_in_flight: int = typer.Option(
        4, help="Chunks queued at once (keeps live uploads flowing)."
    ),
    json_out: bool = JSON,
) -> None:
    """(Re-)embed every done image that lacks rows for a model. Resumable: rerun to continue."""
    ctx = open_context()
    with ctx.engine.connect() as conn:
        rows = repository.list_models(conn)
    chosen = (
        next((r for r in rows if r.key == model), None)
        if model
        else next((r for r in rows if r.is_active), None)
    )
    if chosen is None:
        known = ", ".join(r.key for r in rows) or "none"
        raise CliError(
            f"unknown model {model!r}; registered: {known} (register with `vitrine models add DIR`)"
        )
    items: list[WorkItem] = []
    after = 0
    with ctx.engine.connect() as conn:
        while True:
            page = repository.images_missing_embeddings(
                conn, model_id=chosen.id, after_id=after, limit=5000
            )
            if not page:
                break
            items.extend(WorkItem(image_id=i, uri=u) for i, u in page)
            after = page[-1][0]
    summary = process_items(
        ctx,
        items,
        workers=workers,
        batch_size=batch_size,
        description=f"backfill {chosen.key}",
        model_key=chosen.key,
        max_in_flight=max_in_flight,
    )
    if activate and summary.failed == 0:
        with ctx.engine.begin() as conn:
            repository.activate_model(conn, key=chosen.key)
    result = {
        "model": chosen.key,
        "images": len(items),
        **summary.as_dict(),
        "activated": bool(activate and summary.failed == 0),
    }
    print_result(result, json_out)


@app.command()
@friendly
def requeue(
    older_than: float = typer.Option(600.0, help="Seconds an image may stay pending/processing."),
    workers: int = WORKERS,
    json_out: bool = JSON,
) -> None:
    """Send again uploads stuck in pending/processing (lost messages); safe to repeat."""
    ctx = open_context()
    with ctx.engine.connect() as conn:
        stale = repository.stale_images(conn, older_than_s=older_than, limit=1_000_000)
    items = [WorkItem(image_id=i, uri=u) for i, u in stale]
    summary = process_items(ctx, items, workers=workers if items else 0, description="requeue")
    result = {"requeued": len(items), **summary.as_dict()}
    print_result(result, json_out)


@app.command()
@friendly
def similar(
    image_id: int = typer.Argument(..., help="An images.id"),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    png: Path = typer.Option(None, help="Write a contact sheet of the neighbours here."),
    json_out: bool = JSON,
) -> None:
    """The k images most similar to one image (active model, HNSW index)."""
    ctx = open_context()
    with ctx.engine.connect() as conn:
        neighbours = repository.similar(conn, image_id=image_id, k=k)
    if not neighbours:
        raise CliError(f"image {image_id} has no embedding under the active model (is it done?)")
    if png:
        from ops.pictures import neighbour_sheet

        neighbour_sheet(ctx.engine, [image_id], k, png)
    if json_out:
        emit_json(
            {
                "image_id": image_id,
                "sql": repository.similar_sql(image_id, k),
                "neighbours": [n.__dict__ for n in neighbours],
            }
        )
        return
    out_console.print(repository.similar_sql(image_id, k), style="dim")
    table = Table("image", "label", "distance", "sku", "uri")
    for n in neighbours:
        table.add_row(str(n.image_id), n.label or "", f"{n.distance:.4f}", n.sku or "", n.uri)
    out_console.print(table)


@app.command()
@friendly
def status(json_out: bool = JSON) -> None:
    """Counts by status and label, the active model, the servers."""
    ctx = open_context()
    with ctx.engine.connect() as conn:
        counts = repository.status_counts(conn)
        labels = repository.label_counts(conn)
        models = repository.list_models(conn)
    data = {
        "images": counts,
        "labels": dict(labels),
        "models": [
            {"key": m.key, "active": m.is_active, "embeddings": m.n_embeddings} for m in models
        ],
        "services": services_status(ctx.settings),
    }
    if json_out:
        emit_json(data)
        return
    out_console.print(f"images: {counts}")
    out_console.print(f"labels (active model): {dict(labels)}")
    for m in models:
        out_console.print(
            f"model {m.key}{' (active)' if m.is_active else ''}: {m.n_embeddings} embeddings"
        )


@models_app.command("list")
@friendly
def models_list(json_out: bool = JSON) -> None:
    """Registered models; the active one serves new uploads and similarity."""
    ctx = open_context()
    with ctx.engine.connect() as conn:
        rows = repository.list_models(conn)
    if json_out:
        emit_json(
            [
                {
                    "key": r.key,
                    "active": r.is_active,
                    "embedding_dim": r.embedding_dim,
                    "path": r.path,
                    "embeddings": r.n_embeddings,
                }
                for r in rows
            ]
        )
        return
    table = Table("model", "active", "dim", "embeddings", "path")
    for r in rows:
        table.add_row(
            r.key, "*" if r.is_active else "", str(r.embedding_dim), str(r.n_embeddings), r.path
        )
    out_console.print(table)


@models_app.command("add")
@friendly
def models_add(
    directory: Path = typer.Argument(..., help="A model directory (model.json + .keras)."),
) -> None:
    """Register a model directory (inactive unless no model is active)."""
    from ops.context import register_model_dir
    from pipeline.model import read_spec

    read_spec(directory)  # a clear error for a wrong directory before any server starts
    ctx = open_context()
    model_id = register_model_dir(ctx.engine, directory)
    out_console.print(f"registered model id {model_id} from {directory}")


@models_app.command("activate")
@friendly
def models_activate(
    name: str = typer.Argument(..., help="Model key name@version, or a name."),
) -> None:
    """Switch the active model atomically."""
    ctx = open_context()
    with ctx.engine.begin() as conn:
        rows = repository.list_models(conn)
        matches = [r for r in rows if name in (r.key, r.name)]
        if len(matches) != 1:
            known = ", ".join(r.key for r in rows) or "none"
            raise CliError(f"{name!r} matches {len(matches)} models; registered: {known}")
        repository.activate_model(conn, key=matches[0].key)
    out_console.print(f"active model: {matches[0].key}")


def main() -> None:
    # TensorFlow's C++ start-up chatter is noise on a terminal; real errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app()
