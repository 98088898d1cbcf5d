"""A Keras network run by TensorFlow Lite's XNNPACK, one input at a time on one thread.

EfficientNet-Lite0 is depthwise convolutions, which TensorFlow's own CPU kernels run
slowly: 19-21 ms of CPU per 160 px view, more than all of a photo's preprocessing.
XNNPACK takes 6.1 ms for the same features (cosine difference under 3e-7; measured in
docs/performance.md). One input per call costs the same as batches of 64 and never
re-plans the graph for a new batch size (0.17 s a time), so a live micro-batch of 3 pays
for 3 inputs only. The unknown detector's backbone and a model trained on its features
(`vitrine train --data --backbone lite0`) both run here; the CNN does not (a plain
traced function is as fast for it, `vitrine.pipeline.inference.model.LoadedModel`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class LiteRunner:
    """`call` (a Keras tensor function of one float32 input of `shape`, one (1, d) float32
    output) converted to TensorFlow Lite once per process. An interpreter is not
    thread-safe (the API's search by photo runs in a thread pool): calls take a lock.
    Conversion takes about 2.5 s for EfficientNet-Lite0, when a process loads a model."""

    def __init__(self, call: Callable[[Any], Any], shape: Sequence[int], owner: Any) -> None:
        import tensorflow as tf

        signature = [tf.TensorSpec([1, *shape], tf.float32)]
        traced = tf.function(call, input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [traced.get_concrete_function()], owner
        )
        with warnings.catch_warnings():  # tf.lite.Interpreter's notice of its successor
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_content=converter.convert(), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rows = []
        with self.lock:
            for one in np.asarray(x, dtype=np.float32):
                self.interpreter.set_tensor(self.input, one[None])
                self.interpreter.invoke()
                rows.append(self.interpreter.get_tensor(self.output)[0].copy())
        return np.stack(rows)
