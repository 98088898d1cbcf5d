"""Why the model said what it said: Grad-CAM, its way back onto the photo, and a check.

Grad-CAM (Selvaraju et al. 2017) weighs the last convolutional feature map by the mean
gradient of the class score over it: the places whose features pushed the predicted class
up. The score is the cosine head's logit, not the softmax probability, so a confident
prediction (probability near 1, flat gradient) still gets a map.

The model never sees the photo: `vitrine.pipeline.inference.preprocess` reduces it, may stand it
upright,
trims it to the object and scales that into the 28x28 frame. `input_frame` recomputes
that geometry with the same functions so the map can be drawn on the photo's own pixels
(`heat_on_image`); the trim means a map can only land inside the trimmed box, which is
why `deletion_drops` exists: a map is faithful when removing its hottest pixels hurts the
prediction more than removing as many random ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vitrine.pipeline.inference.framing import strongest_channel
from vitrine.pipeline.inference.preprocess import _bbox, foreground
from vitrine.pipeline.inference.upright import stand_upright, tilt_degrees
from vitrine.pipeline.types import PreprocessSpec

LOGITS_LAYER = "cosine_logits"


def last_conv_layer(keras_model: Any) -> Any:
    """The last layer with a 4-D (batch, h, w, channels) output before pooling: the
    ReLU after the last convolution in vitrine's CNN, the map Grad-CAM reads."""
    for layer in reversed(keras_model.layers):
        shape = getattr(layer, "output", None)
        if shape is not None and len(tuple(layer.output.shape)) == 4:
            if hasattr(layer, "layers"):  # a nested backbone: its own map is hidden inside
                raise ValueError(f"Grad-CAM needs a flat model; {layer.name} is nested")
            return layer
    raise ValueError("the model has no convolutional feature map")


def grad_cam(keras_model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps (n, size, size) in [0, 1] (each divided by its maximum; zeros where no
    location raises the class) for the predicted class, and probabilities (n, classes)."""
    import keras
    import tensorflow as tf

    conv = last_conv_layer(keras_model)
    names = {layer.name for layer in keras_model.layers}
    score_layer = LOGITS_LAYER if LOGITS_LAYER in names else "probabilities"
    probe = keras.Model(
        keras_model.inputs,
        [conv.output, *(keras_model.get_layer(n).output for n in (score_layer, "probabilities"))],
    )
    batch = tf.convert_to_tensor(np.asarray(x, dtype=np.float32))
    with tf.GradientTape() as tape:
        fmap, scores, probs = probe(batch, training=False)
        predicted = tf.argmax(probs, axis=-1)
        score = tf.gather(scores, predicted, axis=1, batch_dims=1)
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
    size = int(batch.shape[1])
    out = np.stack([_upsample(c, size) for c in cams]).astype(np.float32)
    return out, np.asarray(probs, dtype=np.float32)


def _upsample(cam: np.ndarray, size: int) -> np.ndarray:
    big = np.asarray(
        Image.fromarray(cam.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR)
    )
    big = np.maximum(big, 0.0)
    top = float(big.max())
    return big / top if top > 0 else np.zeros_like(big)


@dataclass(frozen=True)
class InputFrame:
    """Where the model input's pixels came from in the decoded image.

    `factor`: the working image is the decoded one box-reduced by it; `working`: its
    (width, height); `tilt`: degrees it was turned to stand upright; `box`: the trimmed
    object (left, top, right, bottom) in the upright working image, None for a blank one;
    `placed`: (x, y, width, height) the box was scaled to inside the size x size input.
    """

    image_size: tuple[int, int]
    factor: int
    working: tuple[int, int]
    tilt: float
    box: tuple[int, int, int, int] | None
    placed: tuple[int, int, int, int]
    size: int

    @classmethod
    def whole(cls, size: int) -> InputFrame:
        """The input is the picture itself (a lite0 model's object view, shown as is)."""
        return cls((size, size), 1, (size, size), 0.0, (0, 0, size, size), (0, 0, size, size), size)


def input_frame(img: Image.Image, spec: PreprocessSpec, work_size: int | None) -> InputFrame:
    """The geometry `to_model_input(img, spec, work_size=work_size)` applies, recomputed
    with its own functions (about 10 ms for a 1 Mpx photo)."""
    size = int(spec.size)
    fg = foreground(img, int(spec.channels), work_size)
    strength = strongest_channel(fg)
    working = (strength.shape[1], strength.shape[0])
    shrink = max(img.size) // work_size if work_size else 1  # (the working copy: longest side)
    tilt = tilt_degrees(strength)
    upright = stand_upright(fg, tilt) if tilt else fg
    upright_strength = strongest_channel(upright)
    box = _bbox(upright_strength)
    if box is not None and not spec.trim_background:
        box = (0, 0, upright_strength.shape[1], upright_strength.shape[0])
    placed = (0, 0, size, size)
    if box is not None:
        bw, bh = box[2] - box[0], box[3] - box[1]
        edge = max(1, round(size * spec.fit_fraction))
        pw = min(size, max(1, round(bw * edge / max(bw, bh))))
        ph = min(size, max(1, round(bh * edge / max(bw, bh))))
        placed = ((size - pw + 1) // 2, (size - ph + 1) // 2, pw, ph)
    return InputFrame(img.size, max(1, shrink), working, tilt, box, placed, size)


def heat_on_image(cam: np.ndarray, frame: InputFrame) -> np.ndarray:
    """A (size, size) map on the model input -> float32 (height, width) on the decoded
    image: the placed part scaled back onto the trimmed box, turned back by the tilt,
    enlarged by the working reduction. Zero wherever the model saw nothing."""
    width, height = frame.image_size
    if frame.box is None:
        return np.zeros((height, width), np.float32)
    x, y, pw, ph = frame.placed
    left, top, right, bottom = frame.box
    patch = _resized(cam[y : y + ph, x : x + pw], (right - left, bottom - top))
    if frame.tilt:
        turned_w, turned_h = _turned_size(frame.working, frame.tilt)
        canvas = np.zeros((turned_h, turned_w), np.float32)
        canvas[top:bottom, left:right] = patch
        back = Image.fromarray(canvas, "F").rotate(
            frame.tilt, resample=Image.Resampling.BILINEAR, expand=True
        )
        cx, cy = (back.width - frame.working[0]) // 2, (back.height - frame.working[1]) // 2
        work = np.asarray(back.crop((cx, cy, cx + frame.working[0], cy + frame.working[1])))
    else:
        work = np.zeros((frame.working[1], frame.working[0]), np.float32)
        work[top:bottom, left:right] = patch
    return np.clip(_resized(work, (width, height)), 0.0, None)


def _turned_size(working: tuple[int, int], degrees: float) -> tuple[int, int]:
    probe = Image.new("L", working).rotate(-degrees, expand=True)
    return probe.width, probe.height


def _resized(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32), "F")
    return np.asarray(img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def mass_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total that falls where `mask` is true (1.0 for an empty map:
    nothing landed outside)."""
    total = float(heat.sum())
    return float(heat[mask].sum()) / total if total > 0 else 1.0


def background_value(spec: PreprocessSpec) -> float:
    """What a white backdrop becomes in the model input (0 for Fashion-MNIST's negative)."""
    return (0.0 if spec.invert else 255.0) * spec.scale + spec.offset


def hottest_mask(cam: np.ndarray, fraction: float) -> np.ndarray:
    """The `fraction` of pixels with the highest map values (ties broken by position)."""
    n = max(1, round(fraction * cam.size))
    order = np.argsort(-cam, axis=None, kind="stable")[:n]
    mask = np.zeros(cam.size, bool)
    mask[order] = True
    return mask.reshape(cam.shape)


def random_mask(shape: tuple[int, ...], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """As many pixels as `hottest_mask` takes, drawn uniformly over the whole frame."""
    size = int(np.prod(shape))
    mask = np.zeros(size, bool)
    mask[rng.choice(size, max(1, round(fraction * size)), replace=False)] = True
    return mask.reshape(shape)


def masked(x: np.ndarray, masks: np.ndarray, fill: float) -> np.ndarray:
    """Inputs (n, size, size, channels) with each image's mask (n, size, size) set to
    `fill`: the masked pixels become backdrop."""
    out = np.array(x, dtype=np.float32, copy=True)
    out[masks] = fill
    return out


def deletion_drops(
    predict: Any,
    x: np.ndarray,
    cams: np.ndarray,
    spec: PreprocessSpec,
    *,
    fraction: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Drop of each image's predicted-class probability when its hottest `fraction` of
    pixels, or a random `fraction`, is painted backdrop. `predict`: inputs -> (n, classes)."""
    base = predict(x)
    predicted = base.argmax(axis=1)
    rows = np.arange(len(x))
    fill = background_value(spec)
    hot = np.stack([hottest_mask(c, fraction) for c in cams])
    rand = np.stack([random_mask(c.shape, fraction, rng) for c in cams])
    p0 = base[rows, predicted]
    return {
        "hottest": p0 - predict(masked(x, hot, fill))[rows, predicted],
        "random": p0 - predict(masked(x, rand, fill))[rows, predicted],
    }
