"""`vitrine explain`: one picture of why the active model labelled a photo as it did."""

from __future__ import annotations

from pathlib import Path

import typer

from vitrine.cli.options import JSON
from vitrine.cli.output import emit_json, friendly, key_values, out_console
from vitrine.ops.context import open_context
from vitrine.ops.errors import UserError


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly
    def explain(
        image_id: int = typer.Argument(None, min=1, help="An images.id"),
        image: Path = typer.Option(None, "--image", help="Or a photo file, in the catalog or not."),
        png: Path = typer.Option(
            None, "--png", help="Write the picture here: Grad-CAM, top labels, evidence."
        ),
        json_out: bool = JSON,
    ) -> None:
        """Where the active model looked (Grad-CAM), its top 3, the nearest training images."""
        from vitrine.ops import explain as ops_explain

        if (image_id is None) == (image is None):
            raise UserError("give an IMAGE_ID or --image FILE (one of them)")
        ctx = open_context()
        found = (
            ops_explain.explain_photo(ctx, photo=image, png=png)
            if image is not None
            else ops_explain.explain_image(ctx, image_id=image_id, png=png)
        )
        result = {
            "source": found.source,
            "model": found.model,
            "label": found.label,
            "confidence": round(found.confidence, 4),
            "unknown_score": None if found.unknown_score is None else round(found.unknown_score, 4),
            "top_k": [{"label": lab, "score": round(p, 4)} for lab, p in found.top_k],
            "neighbours": [
                {"train_index": n.index, "label": n.label, "distance": round(n.distance, 4)}
                for n in found.neighbours
            ],
            "training_set": found.training_set,
            "png": str(found.png) if found.png else None,
            "seconds": round(found.seconds, 3),
        }
        if json_out:
            emit_json(result)
            return
        flat = {k: v for k, v in result.items() if not isinstance(v, list)}
        flat["top_k"] = ", ".join(f"{lab} {p:.3f}" for lab, p in found.top_k)
        flat["neighbours"] = ", ".join(f"{n.label} {n.distance:.3f}" for n in found.neighbours)
        out_console.print(key_values(flat, title="explain"))
