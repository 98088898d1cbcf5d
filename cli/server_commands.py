"""`db upgrade`, `services status|stop`, `worker`, `worker-check`: the servers vitrine runs on."""

from __future__ import annotations

from typing import Any

import typer

from vitrine.cli.options import JSON, QUEUES
from vitrine.cli.output import emit_json, friendly, out_console
from vitrine.ops import services as ops_services
from vitrine.ops.context import open_context
from vitrine.ops.health import check_worker
from vitrine.ops.workers import exec_worker
from vitrine.settings import get_settings

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
services_app = typer.Typer(no_args_is_help=True, help="Embedded PostgreSQL and Redis.")


def print_services(services: dict[str, dict[str, Any]]) -> None:
    """One block per server; URLs whole, on lines of their own, so they can be copied."""
    for name, info in services.items():
        state = "running" if info.get("running") else "stopped"
        kind = "embedded" if info.get("embedded") else "configured"
        out_console.print(f"{name}: {state} ({kind})")
        for key, label in (("url", "url"), ("psql_url", "psql"), ("data_dir", "data")):
            if info.get(key) and (key != "data_dir" or info.get("embedded")):
                out_console.print(f"  {label:5s} {info[key]}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.add_typer(services_app, name="services")

    @db_app.command("upgrade")
    @friendly
    def db_upgrade(json_out: bool = JSON) -> None:
        """Create or migrate the schema (idempotent); register the default model if none is."""
        report = open_context().upgrade()
        if json_out:
            emit_json(report)
            return
        out_console.print(f"database at revision {report.revision}")
        if report.registered_model:
            out_console.print(f"registered and activated {report.registered_model}")
        if report.hashes_to_measure:
            out_console.print(
                f"{report.hashes_to_measure} image(s) need their perceptual hash measured "
                "again (the recipe changed): run `vitrine backfill --hashes`"
            )

    @services_app.command("status")
    @friendly
    def services_status(json_out: bool = JSON) -> None:
        """Show the servers (nothing is started); psql accepts the psql column as it is."""
        status = ops_services.services(get_settings())
        if json_out:
            emit_json(status)
        else:
            print_services(status)

    @services_app.command("stop")
    @friendly
    def services_stop() -> None:
        """Stop the embedded servers; their data stays in the data directory."""
        stopped = ops_services.stop(get_settings())
        out_console.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))

    @app.command()
    @friendly
    def worker(
        concurrency: int = typer.Option(
            None, "--concurrency", min=1, help="Processes (default VITRINE_WORKER_CONCURRENCY)."
        ),
        queues: str = QUEUES,
        loglevel: str = typer.Option("INFO", "--loglevel"),
        nice: int = typer.Option(
            None, "--nice", min=0, max=19, help="CPU priority, 19 lowest (backfill workers: 10)."
        ),
    ) -> None:
        """Run a Celery worker (replaces this process; servers checked first)."""
        names = [q.strip() for q in queues.split(",") if q.strip()]
        exec_worker(
            open_context(), concurrency=concurrency, queues=names, loglevel=loglevel, nice=nice
        )

    @app.command("worker-check")
    @friendly
    def worker_check(
        max_age: float = typer.Option(
            60.0, "--max-age", min=0, help="Seconds the heartbeat may be old."
        ),
        ping: bool = typer.Option(
            False, "--ping", help="Also ping this worker's node through the broker."
        ),
    ) -> None:
        """Exit 0 if this host's worker is alive (fresh heartbeat file), else 1 and why."""
        health = check_worker(open_context(), max_age=max_age, with_ping=ping)
        out_console.print(("ok: " if health.ok else "unhealthy: ") + health.message, soft_wrap=True)
        if not health.ok:
            raise typer.Exit(1)
