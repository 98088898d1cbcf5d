"""A merchant's own taxonomy on EfficientNet-Lite0's ImageNet features (`train --backbone lite0`).

The CNN trained from scratch sees a 28x28 grey thumbnail; EfficientNet-Lite0 has seen
ImageNet and looks at the object's colour view. Which wins depends on the photos: on drawn
home goods Lite0's features lead by 2 to 5 points, on fashion photos made from 28 px
items the CNN leads by 3 to 4.5 (docs/training.md, "A backbone that knows the world").
This recipe freezes the backbone, computes each photo's features once (the unknown
detector's own network and view, run by XNNPACK: about 6 ms a photo), trains vitrine's
heads on them with the one training loop (`train.train_folder`: epochs, ETA,
checkpoints, resume), then puts the heads onto the backbone as one network
(`model.build_lite0_model`). Served, that network's forward pass gives the label, the
embedding and the features its own unknown detector scores
(`vitrine.pipeline.training.own_detector`), with no second backbone pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.pipeline.inference import efficientnet_lite, unknown
from vitrine.pipeline.inference.model import (
    LITE0,
    backbone_key,
    build_feature_head,
    build_lite0_model,
)
from vitrine.pipeline.training import own_detector
from vitrine.pipeline.types import PreprocessSpec

Log = Callable[[str], None]

#: The object view's side: the unknown detector's, where its AUROC was measured.
VIEW_SIZE = unknown.VIEW_SIZE


#: What `--backbone` may call this recipe, as `backbone_key` spells it.
LITE0_NAMES = (LITE0, "efficientnetlite0")


def is_lite0(backbone: str | None) -> bool:
    """Whether `--backbone` names this recipe (`lite0`, `efficientnet-lite0`, any case)."""
    return backbone is not None and backbone_key(backbone) in LITE0_NAMES


def preprocess_spec(input_size: int | None) -> PreprocessSpec:
    """The object view at `input_size` px (default 160), scaled as the backbone was
    trained: (x - 127) / 128."""
    return PreprocessSpec(
        size=input_size or VIEW_SIZE,
        channels=3,
        invert=False,
        autocontrast=False,
        scale=1.0 / 128.0,
        offset=-127.0 / 128.0,
        view=True,
    )


@dataclass(frozen=True)
class Lite0Recipe:
    """What the one training loop (`train.train_folder`) needs to train a lite0 model: the
    photos' backbone features as its input, the heads to fit on them, and how the fitted
    heads go onto the backbone to make the network that is saved and served."""

    features: np.ndarray
    build: Callable[[], Any]
    serve: Callable[[Any], Any]
    recipe: dict[str, Any]


def lite0_recipe(
    images: np.ndarray, *, num_classes: int, size: int, embedding_dim: int, log: Log
) -> Lite0Recipe:
    """The pieces for view inputs `images` (`preprocess_spec` at `size` px)."""
    features = own_detector.view_features(images, log, size=size)
    state = efficientnet_lite.read_legacy_pth(efficientnet_lite.weights_path())

    def build() -> Any:
        return build_feature_head(
            num_features=features.shape[1], num_classes=num_classes, embedding_dim=embedding_dim
        )

    def serve(head: Any) -> Any:
        whole = build_lite0_model(
            num_classes=num_classes, input_size=size, embedding_dim=embedding_dim
        )
        efficientnet_lite.load(whole, state)
        for layer in head.layers:
            if layer.weights:
                whole.get_layer(layer.name).set_weights(layer.get_weights())
        return whole

    recipe = {
        "recipe": "folder",
        "backbone": LITE0,
        "weights_file": Path(efficientnet_lite.WEIGHTS_FILE).name,
    }
    return Lite0Recipe(features, build, serve, recipe)
