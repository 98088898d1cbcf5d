"""What `vitrine demo` shows: uploads by label, neighbours with the SQL that found them."""

from __future__ import annotations

from vitrine.cli.output import emit_json, out_console, table
from vitrine.ops.demo import DemoReport


def print_demo(report: DemoReport, json_out: bool) -> None:
    hits, total = report.same_class
    if json_out:
        emit_json(
            {
                "images": report.images,
                **report.summary.as_dict(),
                "accuracy_vs_truth": round(report.correct / max(1, report.images), 4),
                "labels": dict(report.labels),
                "neighbours_same_class": f"{hits}/{total}",
                "neighbours": [
                    {
                        "image_id": hood.image_id,
                        "true_label": hood.true_label,
                        "sql": hood.sql,
                        "found": [
                            {
                                "image_id": nb.image_id,
                                "merchant_id": nb.merchant_id,
                                "label": nb.label,
                                "true_label": true_label,
                                "distance": round(nb.distance, 6),
                            }
                            for nb, true_label in hood.neighbours
                        ],
                    }
                    for hood in report.neighbourhoods
                ],
                "contact_sheet": str(report.sheet),
                "wall_seconds": report.wall_seconds,
            }
        )
        return
    out_console.print(
        table(("label", "images"), report.labels, title=f"{report.images} uploads by label")
    )
    for hood in report.neighbourhoods:
        out_console.print(
            f"\nnearest neighbours of image {hood.image_id} (true class: {hood.true_label}), "
            "found by:"
        )
        out_console.print(f"  {hood.sql}", style="cyan")
        rows = [
            (nb.image_id, nb.label, true_label, f"{nb.distance:.4f}")
            for nb, true_label in hood.neighbours
        ]
        out_console.print(table(("image", "predicted", "true class", "cosine distance"), rows))
    out_console.print(
        f"\nlabels match the items' true class for {report.correct}/{report.images} uploads; "
        f"neighbours of the same class: {hits}/{total}"
    )
    out_console.print(f"contact sheet: {report.sheet}")
    out_console.print(f"demo finished in {report.wall_seconds:.0f}s")
