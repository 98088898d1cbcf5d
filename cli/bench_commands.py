"""`vitrine bench`: throughput figures as one JSON object; `bench ingest` for every path."""

from __future__ import annotations

from pathlib import Path

import typer

from vitrine.cli.options import JSON, parse_positive_ints
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

bench_app = typer.Typer(
    invoke_without_command=True,
    help="Throughput on this machine; `bench ingest` times every upload path.",
)


def _show(results: dict[str, object], json_out: bool, title: str) -> None:
    if json_out:
        emit_json(results)
    else:
        flat = {k: v for k, v in results.items() if not isinstance(v, dict)}
        out_console.print(key_values(flat, title=title))
        for name, value in results.items():
            if isinstance(value, dict):
                out_console.print(key_values(value, title=name))


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")

    @bench_app.callback()
    @friendly
    def bench(
        ctx: typer.Context,
        size: int = typer.Option(512, "--size", min=1, help="Images per measurement."),
        batch: int = typer.Option(64, "--batch", min=1, help="Forward batch size."),
        model: Path = typer.Option(None, "--model", help="Model directory (default: shipped)."),
        json_out: bool = JSON,
    ) -> None:
        """Forward pass, preprocessing and decode throughput on this machine."""
        if ctx.invoked_subcommand is not None:
            return
        from vitrine.bench.forward import run_bench
        from vitrine.ops.models import check_model_dir

        if model is not None:
            check_model_dir(model)
        _show(run_bench(get_settings(), size=size, batch=batch, model=model), json_out, "bench")

    @bench_app.command("train")
    @friendly
    def bench_train(
        steps: int = typer.Option(40, "--steps", min=1, help="Timed training steps per run."),
        batch: int = typer.Option(128, "--batch", min=1, help="Training batch size."),
        architectures: str = typer.Option(
            "cnn,resnet20,resnet32", "--architectures", help="Comma-separated networks."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Training speed of each network in fp32 and bf16 (images per CPU-second)."""
        from vitrine.bench.training import run_training_bench
        from vitrine.ops.training import ARCHITECTURES

        chosen = [a.strip() for a in architectures.split(",") if a.strip()]
        if not chosen or set(chosen) - set(ARCHITECTURES):
            raise UserError(f"--architectures takes some of {','.join(ARCHITECTURES)}")
        results = run_training_bench(steps=steps, batch=batch, architectures=chosen)
        _show(results, json_out, "bench train")

    @bench_app.command("ingest")
    @friendly
    def bench_ingest(
        images: int = typer.Option(1000, "--images", min=1, help="Photos per path (N)."),
        seed: int = typer.Option(2026, "--seed"),
        concurrency: int = typer.Option(
            None, "--concurrency", min=1, help="Worker processes (default: usable CPUs)."
        ),
        naive_images: int = typer.Option(
            None, "--naive-images", min=1, help="Photos for the naive path (min(N, 200))."
        ),
        latency_uploads: int = typer.Option(100, "--latency-uploads", min=1),
        latency_rate: float = typer.Option(10.0, "--latency-rate", min=0.1, help="Uploads/s."),
        keep_rows: bool = typer.Option(False, "--keep-rows", help="Keep the bench's rows."),
        json_out: bool = JSON,
    ) -> None:
        """Bound, bulk, live, naive and latency figures, measured in one run."""
        from vitrine.bench.ingest import IngestBench, run_ingest_bench

        request = IngestBench(
            images=images,
            seed=seed,
            concurrency=concurrency,
            naive_images=naive_images,
            latency_uploads=latency_uploads,
            latency_rate=latency_rate,
            keep_rows=keep_rows,
        )
        results = run_ingest_bench(open_context(), request, progress=progress_bar)
        _show(results, json_out, "bench ingest")

    @bench_app.command("search")
    @friendly
    def bench_search(
        vectors: int = typer.Option(20_000, "--vectors", min=100, help="Catalog size (N)."),
        queries: int = typer.Option(200, "--queries", min=10, help="Queries per measurement."),
        merchants: int = typer.Option(100, "--merchants", min=1),
        seed: int = typer.Option(2026, "--seed"),
        ef_search: str = typer.Option(
            "", "--ef-search", help="Also measure these candidate-list lengths, e.g. 40,200."
        ),
        keep: bool = typer.Option(False, "--keep", help="Keep the scratch database."),
        reuse: bool = typer.Option(
            False, "--reuse", help="Measure a kept scratch database again (implies --keep)."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Latency and recall@10 of similarity search over N vectors, plain and filtered."""
        from vitrine.bench.search import SearchBench, run_search_bench

        request = SearchBench(
            vectors=vectors,
            queries=queries,
            merchants=merchants,
            seed=seed,
            ef_search=parse_positive_ints(ef_search, "--ef-search"),
            keep=keep or reuse,
            reuse=reuse,
        )
        results = run_search_bench(open_context(), request, progress=progress_bar)
        _show(results, json_out, "bench search")

    @bench_app.command("duplicates")
    @friendly
    def bench_duplicates(
        items: int = typer.Option(300, "--items", min=2, help="Distinct items (N)."),
        seed: int = typer.Option(2026, "--seed"),
        json_out: bool = JSON,
    ) -> None:
        """Precision and recall of the perceptual hash on re-published listing photos."""
        from vitrine.bench.duplicates import run_duplicates_bench

        results = run_duplicates_bench(
            get_settings(), items=items, seed=seed, progress=progress_bar
        )
        _show(results, json_out, "bench duplicates")

    @bench_app.command("catalog")
    @friendly
    def bench_catalog(
        items: int = typer.Option(300, "--items", min=10, help="Distinct items (N)."),
        foreign: int = typer.Option(
            110, "--foreign", min=1, help="Photos of none of the categories."
        ),
        seed: int = typer.Option(2026, "--seed"),
        json_out: bool = JSON,
    ) -> None:
        """One realistic catalogue through the real path, in a scratch database: listings
        kept, effective labels, unknown, near-duplicates, similar items; by photo style."""
        from vitrine.bench.catalog import run_catalog_bench

        results = run_catalog_bench(
            open_context(), items=items, foreign=foreign, seed=seed, progress=progress_bar
        )
        _show(results, json_out, "bench catalog")

    @bench_app.command("explain")
    @friendly
    def bench_explain(
        items: int = typer.Option(200, "--items", min=2, help="Test items as photos (N)."),
        seed: int = typer.Option(2026, "--seed"),
        json_out: bool = JSON,
    ) -> None:
        """Faithfulness of Grad-CAM maps: mass on the object, deletion test vs random."""
        from vitrine.bench.explain import run_explain_bench

        results = run_explain_bench(get_settings(), items=items, seed=seed, progress=progress_bar)
        _show(results, json_out, "bench explain")

    @bench_app.command("quality")
    @friendly
    def bench_quality(
        items: int = typer.Option(
            300, "--items", min=7, help="Items: a clean photo each, and a copy with a defect."
        ),
        seed: int = typer.Option(2026, "--seed"),
        json_out: bool = JSON,
    ) -> None:
        """Precision and recall per listing-photo rule on photos with known defects."""
        from vitrine.bench.quality import run_quality_bench

        results = run_quality_bench(get_settings(), items=items, seed=seed, progress=progress_bar)
        _show(results, json_out, "bench quality")

    @bench_app.command("mismatches")
    @friendly
    def bench_mismatches(
        items: int = typer.Option(2000, "--items", min=20, help="Test items as photos (N)."),
        seed: int = typer.Option(2026, "--seed"),
        json_out: bool = JSON,
    ) -> None:
        """Precision and recall of label_mismatches with 5 % of categories declared wrong."""
        from vitrine.bench.mismatches import run_mismatches_bench

        results = run_mismatches_bench(
            get_settings(), items=items, seed=seed, progress=progress_bar
        )
        _show(results, json_out, "bench mismatches")

    @bench_app.command("reviews")
    @friendly
    def bench_reviews(
        pairs: int = typer.Option(
            500, "--pairs", min=2, help="Listings (N), each with 3 review photos."
        ),
        seed: int = typer.Option(2026, "--seed"),
        json_out: bool = JSON,
    ) -> None:
        """ROC AUC of the review match score: same item vs another item or class."""
        from vitrine.bench.reviews import run_reviews_bench

        results = run_reviews_bench(get_settings(), pairs=pairs, seed=seed, progress=progress_bar)
        _show(results, json_out, "bench reviews")

    @bench_app.command("desk")
    @friendly
    def bench_desk(
        images: int = typer.Option(100_000, "--images", min=100, help="Catalog size (N)."),
        runs: int = typer.Option(5, "--runs", min=1, help="Timed fetches per page."),
        page_budget_s: float = typer.Option(
            10.0, "--page-budget-s", min=0.1, help="A page slower than this is timed once."
        ),
        seed: int = typer.Option(2026, "--seed"),
        keep: bool = typer.Option(False, "--keep", help="Keep the scratch database."),
        reuse: bool = typer.Option(
            False, "--reuse", help="Measure a kept scratch database again (implies --keep)."
        ),
        json_out: bool = JSON,
    ) -> None:
        """The review desk's page times (median, max) on N images with decisions, as the
        real app renders them: grid, deep pages, every queue, item pages."""
        from vitrine.bench.desk import DeskBench, pages_table_rows, run_desk_bench

        request = DeskBench(
            images=images,
            runs=runs,
            seed=seed,
            page_budget_s=page_budget_s,
            keep=keep or reuse,
            reuse=reuse,
        )
        results = run_desk_bench(open_context(), request, progress=progress_bar)
        if json_out:
            emit_json(results)
        else:
            sessions = ("pages", "merchant_pages")
            flat = {k: v for k, v in results.items() if k not in sessions and k != "errors"}
            flat["slow_pages"] = len(results["slow_pages"])
            out_console.print(key_values(flat, title="bench desk"))
            columns = ("page (ms; * slow)", "median", "max", "SQL", "slowest statement")
            for key in sessions:
                who = "platform desk" if key == "pages" else f"merchant {results.get('merchant')}"
                out_console.print(table(columns, pages_table_rows(results, key), title=who))
            out_console.print("Each page's path and slowest statement: --json.")
        if results["errors"]:
            for error in results["errors"]:
                err_console.print(f"[bold red]error:[/] {error}", markup=True, highlight=False)
            raise typer.Exit(EXIT_FAILED)
