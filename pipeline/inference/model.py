"""The CNN and its contract: one forward pass gives class probabilities and an embedding.

Written against Keras 3 (`import keras`), not `tf.keras`, so the same code and the same
`.keras` files work with the TensorFlow backend in production and with JAX or PyTorch
where a training machine has those.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vitrine.pipeline.inference.unknown import FEATURES, UNKNOWN_FILE, UnknownDetector
from vitrine.pipeline.types import ModelSpec, Prediction

MODEL_JSON = "model.json"


def _keras() -> Any:
    # Imported lazily: TensorFlow takes seconds to import and allocates thread pools, which
    # must happen in each worker process after the fork, never in a parent.
    import keras

    return keras


def cosine_classifier_class() -> type:
    """The classification head: logits are scaled cosines between embedding and class centres.

    Training the softmax on cosines makes the L2-normalised embedding itself the thing that
    separates classes, so nearest-neighbour search by cosine distance in pgvector ranks
    by the same geometry the classifier uses.
    """
    keras = _keras()

    @keras.saving.register_keras_serializable(package="vitrine")
    class CosineClassifier(keras.layers.Layer):  # type: ignore[misc,name-defined]
        def __init__(self, units: int, scale: float = 16.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units = units
            self.scale = scale

        def build(self, input_shape: Sequence[int | None]) -> None:
            self.centres = self.add_weight(
                name="centres",
                shape=(int(input_shape[-1]), self.units),  # type: ignore[arg-type]
                initializer="glorot_uniform",
            )

        def call(self, inputs: Any) -> Any:
            ops = keras.ops
            x = inputs / (ops.norm(inputs, axis=-1, keepdims=True) + 1e-7)
            w = self.centres / (ops.norm(self.centres, axis=0, keepdims=True) + 1e-7)
            return self.scale * ops.matmul(x, w)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "units": self.units, "scale": self.scale}

    return CosineClassifier


_cosine_classifier: type | None = None


def _cosine_layer() -> type:
    global _cosine_classifier
    if _cosine_classifier is None:
        _cosine_classifier = cosine_classifier_class()
    return _cosine_classifier


def build_cnn(
    *,
    num_classes: int,
    input_size: int = 28,
    channels: int = 1,
    widths: Sequence[int] = (64, 128, 256),
    embedding_dim: int = 128,
    dropout: float = 0.3,
) -> Any:
    """A VGG-style CNN (conv-BN-ReLU pairs, max-pool between stages, global average pool).

    Returns a model with two named outputs, `probabilities` and `embedding`.
    """
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = inputs
    for stage, width in enumerate(widths):
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        if stage < len(widths) - 1:
            x = layers.MaxPooling2D()(x)
            x = layers.Dropout(0.1 * (stage + 1))(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return _heads(keras, inputs, x, num_classes=num_classes, embedding_dim=embedding_dim)


def build_resnet(
    *,
    num_classes: int,
    depth: int = 20,
    input_size: int = 28,
    channels: int = 1,
    width: int = 16,
    embedding_dim: int = 128,
    weight_decay: float = 0.0,
) -> Any:
    """He et al.'s CIFAR ResNet (depth 6n+2: 20, 32, 44...) with vitrine's two heads.

    Three stages of n basic blocks at `width`, 2x and 4x channels, the last two halving the
    grid (28 -> 14 -> 7); a 1x1 convolution projects the shortcut where the shape changes.
    With the heads, ResNet-20 has 0.28 M parameters against the VGG-style CNN's 1.18 M and
    trains 1.8 times as many images per CPU-second in fp32 on the 2-core development
    machine (`vitrine bench train`): what a CPU-only team can afford decides the network.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 44, ...), not {depth}")
    keras = _keras()
    layers = keras.layers
    blocks = (depth - 2) // 6
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None

    def conv(x: Any, filters: int, kernel: int, stride: int) -> Any:
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=regularizer,
        )(x)

    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = layers.ReLU()(layers.BatchNormalization()(conv(inputs, width, 3, 1)))
    for stage in range(3):
        filters = width * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            y = layers.ReLU()(layers.BatchNormalization()(conv(x, filters, 3, stride)))
            y = layers.BatchNormalization()(conv(y, filters, 3, 1))
            shortcut = x
            if stride != 1 or int(x.shape[-1]) != filters:
                shortcut = layers.BatchNormalization()(conv(x, filters, 1, stride))
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    return _heads(keras, inputs, x, num_classes=num_classes, embedding_dim=embedding_dim)


def _heads(keras: Any, inputs: Any, features: Any, *, num_classes: int, embedding_dim: int) -> Any:
    layers = keras.layers
    x = layers.Dense(embedding_dim, use_bias=False, name="embedding_dense")(features)
    x = layers.BatchNormalization(name="embedding_bn")(x)
    embedding = layers.UnitNormalization(name="embedding")(x)
    logits = _cosine_layer()(num_classes, name="cosine_logits")(embedding)
    probabilities = layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(inputs, {"probabilities": probabilities, "embedding": embedding})


#: The keras.applications backbones `build_backbone_model` knows, as `backbone_key` spells them.
KERAS_BACKBONES = ("mobilenetv3small", "efficientnetb0")


def backbone_key(backbone: str) -> str:
    """A backbone's name as the builders know it: lower case, no dashes or underscores."""
    return backbone.lower().replace("-", "").replace("_", "")


def build_backbone_model(
    *,
    backbone: str,
    num_classes: int,
    input_size: int,
    weights_path: str | None,
    embedding_dim: int = 128,
) -> Any:
    """A `keras.applications` backbone (MobileNetV3Small or EfficientNetB0) with vitrine's heads.

    Weights come from a file the user has (`weights_path`, ImageNet `notop` weights), never
    from the network; without one the backbone starts from random initialisation.
    """
    keras = _keras()
    apps = keras.applications
    builders = {
        "mobilenetv3small": lambda: apps.MobileNetV3Small(
            input_shape=(input_size, input_size, 3),
            include_top=False,
            weights=None,
            include_preprocessing=True,
            pooling="avg",
        ),
        "efficientnetb0": lambda: apps.EfficientNetB0(
            input_shape=(input_size, input_size, 3), include_top=False, weights=None, pooling="avg"
        ),
    }
    key = backbone_key(backbone)
    if key not in builders:
        raise ValueError(
            f"unknown backbone {backbone!r}; choose MobileNetV3Small or EfficientNetB0"
        )
    base = builders[key]()
    if weights_path:
        base.load_weights(weights_path, skip_mismatch=False)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    features = keras.layers.Dropout(0.2)(base(inputs))
    return _heads(keras, inputs, features, num_classes=num_classes, embedding_dim=embedding_dim)


#: The backbone `vitrine train --data --backbone lite0` puts its heads on, and the name of
#: that model's unit-length backbone features, which its unknown detector reads.
LITE0 = "lite0"
LITE0_FEATURES = "backbone_features"


def build_lite0_model(*, num_classes: int, input_size: int, embedding_dim: int = 128) -> Any:
    """EfficientNet-Lite0 (`vitrine.pipeline.inference.efficientnet_lite`, weights not yet
    loaded) with vitrine's heads on its unit-length features, as one flat network: Grad-CAM
    reads its last feature map, and the forward pass also gives the features the unknown
    detector scores (`LoadedModel`), so a photo goes through the backbone once."""
    from vitrine.pipeline.inference import efficientnet_lite

    keras = _keras()
    inputs = keras.Input((input_size, input_size, 3), name="image")
    features = keras.layers.UnitNormalization(name=LITE0_FEATURES)(
        efficientnet_lite.features_of(inputs)
    )
    return _heads(keras, inputs, features, num_classes=num_classes, embedding_dim=embedding_dim)


def build_feature_head(*, num_features: int, num_classes: int, embedding_dim: int) -> Any:
    """The heads of `build_lite0_model` alone, on the backbone's features (what training
    fits: the backbone is frozen, so its features are computed once). Their layers carry
    the same names, so their weights go into the whole network by name."""
    keras = _keras()
    inputs = keras.Input((num_features,), name="features")
    x = keras.layers.UnitNormalization(name=LITE0_FEATURES)(inputs)
    x = keras.layers.Dropout(0.2)(x)
    return _heads(keras, inputs, x, num_classes=num_classes, embedding_dim=embedding_dim)


def save_model_dir(model: Any, spec: ModelSpec, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / spec.keras_file)
    (directory / MODEL_JSON).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")


def read_spec(directory: Path) -> ModelSpec:
    path = Path(directory) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: a model directory holds model.json and a .keras file "
            "(train one with `vitrine train`)"
        )
    return ModelSpec.from_dict(json.loads(path.read_text()))


@dataclass
class LoadedModel:
    """A model directory loaded for inference; `predict` is the only way in.

    With the TensorFlow backend every chunk runs through one `tf.function` traced once for
    any batch size (input signature (None, size, size, channels)), instead of Keras'
    layer-by-layer eager call. Same kernels, so the same numbers (measured: largest
    difference 0 on 1,000 photos); 1,000 inputs in chunks of 64 on 2 shared cores, 5 runs:
    eager 1.91 s (1.70-1.92), compiled 1.25 s (1.12-1.28), so 1.5x the images per second.
    Measured and not used: XLA (`jit_compile=True`, 1.40 s), chunks of 256 or fixed,
    zero-padded shapes (1.15-1.21 s, within the noise of 64), Keras' `predict_on_batch`
    (1.22 s, but retraces per shape on JAX), TFLite with XNNPACK (1.32-2.12 s; its
    interpreter is deprecated in TensorFlow 2.20+). Other backends keep the eager call.
    """

    spec: ModelSpec
    keras_model: Any
    #: "None of our categories" (`vitrine.pipeline.inference.unknown`), when the directory carries
    # one.
    unknown: UnknownDetector | None = None
    _compiled: Any = field(default=None, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _beside: ThreadPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)

    def compiled_forward(self) -> Any:
        """The callable each chunk goes through: x (n, size, size, channels) float32 ->
        {"probabilities", "embedding"}; traced on first use (about 0.5 s), then reused."""
        with self._lock:
            if self._compiled is None:
                self._compiled = _compile(self.keras_model, lite0=self.is_lite0)
            return self._compiled

    def forward(self, batch: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (n, classes) and L2-normalised embeddings (n, dim) for a batch."""
        probs, embs, _ = self._outputs(batch, batch_size)
        return probs, embs

    def _outputs(
        self, batch: np.ndarray, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """`forward`'s arrays and, for a lite0 model, its backbone features (n, 1280)."""
        wants = ["probabilities", "embedding"] + ([LITE0_FEATURES] if self.is_lite0 else [])
        if len(batch) == 0:
            widths = (len(self.spec.labels), self.spec.embedding_dim, FEATURES)
            empty = [np.zeros((0, w), np.float32) for w in widths[: len(wants)]]
            return empty[0], empty[1], empty[2] if self.is_lite0 else None
        call = self.compiled_forward()
        batch = np.asarray(batch, dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in wants}
        for start in range(0, len(batch), batch_size):
            out = call(batch[start : start + batch_size])
            for name in wants:
                parts[name].append(np.asarray(out[name], dtype=np.float32))
        joined = [np.concatenate(parts[name]) for name in wants]
        return joined[0], joined[1], joined[2] if self.is_lite0 else None

    @cached_property
    def is_lite0(self) -> bool:
        """A lite0 model (`build_lite0_model`): run by XNNPACK, its features in its output."""
        return any(layer.name == LITE0_FEATURES for layer in self.keras_model.layers)

    def unknown_scores(self, batch: np.ndarray, views: np.ndarray | None) -> np.ndarray | None:
        """The unknown detector's scores for model inputs `batch` (their object `views`
        where the detector has its own backbone); None without a detector."""
        if self.unknown is None:
            return None
        if self.unknown.backbone is None:
            features = self._outputs(batch)[2]
            return None if features is None else self.unknown.scores_of(features)
        return None if views is None else self.unknown.scores(views)

    def _thread_beside(self) -> ThreadPoolExecutor:
        """One thread that scores the object views while the CNN runs: both release the
        GIL, so a live upload waits for the longer of the two, not their sum (one photo:
        CNN 7.1 ms, detector 13.7, predict 24.3 -> 15.2 ms; docs/performance.md). Made on
        first use, so after a worker's fork."""
        with self._lock:
            if self._beside is None:
                self._beside = ThreadPoolExecutor(1, thread_name_prefix="unknown-detector")
            return self._beside

    @property
    def view_size(self) -> int | None:
        """The object view's side the unknown detector wants (`preprocess.object_view`),
        None when the model has none."""
        return self.unknown.view_size if self.unknown is not None else None

    def predict(
        self, batch: np.ndarray, top_k: int = 3, views: np.ndarray | None = None
    ) -> list[Prediction]:
        """Predictions for model inputs `batch`; with the object `views` of the same photos
        (and a detector) each also says how far it lies from the catalogue."""
        unknown: list[float | None] = [None] * len(batch)
        if self.unknown is not None and self.unknown.backbone is None:
            probs, embs, features = self._outputs(batch)
            if features is not None:
                unknown = [float(s) for s in self.unknown.scores_of(features)]
        elif self.unknown is not None and views is not None and len(views):
            scoring = self._thread_beside().submit(self.unknown.scores, views)
            probs, embs = self.forward(batch)
            unknown = [float(s) for s in scoring.result()]
        else:
            probs, embs = self.forward(batch)
        return [
            self._prediction(p, e, top_k, u) for p, e, u in zip(probs, embs, unknown, strict=True)
        ]

    def _prediction(
        self, probs: np.ndarray, emb: np.ndarray, top_k: int, unknown: float | None
    ) -> Prediction:
        order = np.argsort(-probs)[:top_k]
        labels = self.spec.labels
        threshold = self.unknown.threshold if self.unknown is not None else None
        return Prediction(
            label=labels[int(order[0])],
            label_index=int(order[0]),
            confidence=float(probs[order[0]]),
            top_k=tuple((labels[int(i)], float(probs[i])) for i in order),
            embedding=emb,
            scores=tuple((name, float(p)) for name, p in zip(labels, probs, strict=True)),
            unknown_score=unknown,
            unknown=None if unknown is None or threshold is None else unknown > threshold,
        )


def _compile(keras_model: Any, *, lite0: bool) -> Any:
    """`keras_model` in inference mode as one traced function (TensorFlow backend), or
    its eager call (other backends); a lite0 model by XNNPACK (`_lite_forward`)."""
    if _keras().backend.backend() != "tensorflow":
        return lambda x: keras_model(x, training=False)
    if lite0:
        return _lite_forward(keras_model)
    import tensorflow as tf

    shape = (None, *tuple(keras_model.inputs[0].shape)[1:])
    signature = [tf.TensorSpec(shape, tf.float32)]
    return tf.function(lambda x: keras_model(x, training=False), input_signature=signature)


def _lite_forward(keras_model: Any) -> Any:
    """A lite0 model's probabilities, embedding and backbone features, run by TensorFlow
    Lite's XNNPACK one photo at a time (`vitrine.pipeline.inference.lite`: TensorFlow's own
    depthwise kernels take about 3x the CPU). The three come out as one row and are split."""
    import tensorflow as tf

    from vitrine.pipeline.inference.lite import LiteRunner

    names = ("probabilities", "embedding", LITE0_FEATURES)
    probe = _keras().Model(
        keras_model.inputs, [keras_model.get_layer(name).output for name in names]
    )
    widths = [int(probe.outputs[i].shape[-1]) for i in range(len(names))]
    runner = LiteRunner(
        lambda t: tf.concat(probe(t, training=False), axis=1),
        tuple(keras_model.inputs[0].shape)[1:],
        probe,
    )
    edges = np.cumsum(widths)[:-1]

    def call(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(names, np.split(runner(np.asarray(x)), edges, axis=1), strict=True))

    return call


def load_model_dir(directory: Path) -> LoadedModel:
    spec = read_spec(directory)
    _cosine_layer()  # registers the custom layer before deserialisation
    keras = _keras()
    keras_model = keras.saving.load_model(Path(directory) / spec.keras_file, compile=False)
    detector = None
    if spec.unknown and (Path(directory) / UNKNOWN_FILE).is_file():
        detector = UnknownDetector.load(Path(directory), spec.unknown)
    loaded = LoadedModel(spec=spec, keras_model=keras_model, unknown=detector)
    shape = tuple(keras_model.inputs[0].shape)[1:]
    loaded.forward(np.zeros((1, *shape), np.float32))  # trace now (0.27 s), not on an upload
    return loaded


class ModelCache:
    """Models loaded once per process, on first use, under a lock (after any fork): the
    one cache of the workers and of the API's search by photo.

    `latest_only` keeps only the model asked for last (the API serves the active model,
    and a switch of model must not keep the old one in memory); the workers keep every
    model they were asked for (a re-embedding backfill runs beside the active one)."""

    def __init__(self, *, latest_only: bool = False) -> None:
        self._lock = threading.Lock()
        self._models: dict[Path, LoadedModel] = {}
        self._latest_only = latest_only

    def get(self, directory: Path) -> LoadedModel:
        key = Path(directory).resolve()
        with self._lock:  # one load, however many callers arrive at once
            if key not in self._models:
                loaded = load_model_dir(key)
                if self._latest_only:
                    self._models.clear()
                self._models[key] = loaded
            return self._models[key]

    def loaded(self) -> list[Path]:
        return list(self._models)
