"""`forget`: erase a merchant's images or one image, with the files vitrine stored.

A separate module because it is the one command that destroys data: it names exactly
one target, can be rehearsed with `--dry-run`, and says what it did in one line (or one
JSON object); the audit row it leaves is in table `erasures` (vitrine.ops.forget).
"""

from __future__ import annotations

import typer

from vitrine.cli.options import JSON
from vitrine.cli.output import emit_json, friendly, out_console
from vitrine.ops.context import open_context
from vitrine.ops.forget import ForgetReport, forget


def register(app: typer.Typer) -> None:
    @app.command("forget")
    @friendly
    def forget_command(
        merchant: str = typer.Option(
            None, "--merchant", help="Erase every image of this merchant."
        ),
        image: int = typer.Option(None, "--image", help="Erase this one image (its id)."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Count what would go; delete nothing."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Delete images (results, vectors, vitrine's stored upload files) and audit it."""
        report = forget(open_context(), merchant_id=merchant, image_id=image, dry_run=dry_run)
        if json_out:
            emit_json(report)
            return
        out_console.print(_summary(report))


def _summary(report: ForgetReport) -> str:
    what = (
        f"merchant {report.subject!r}" if report.scope == "merchant" else f"image {report.subject}"
    )
    reviews = f", {report.reviews_deleted} review photo(s)" if report.reviews_deleted else ""
    counts = f"{report.images_deleted} image(s){reviews}, {report.files_deleted} upload file(s)" + (
        f"; {report.files_shared} file(s) kept, still used by other images"
        if report.files_shared
        else ""
    )
    if report.dry_run:
        return f"dry run, nothing deleted: forgetting {what} would delete {counts}"
    return f"forgot {what}: deleted {counts} (audit row {report.erasure_id} in erasures)"
