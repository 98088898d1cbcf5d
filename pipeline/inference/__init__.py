"""What a worker runs on one photo, in order: `decode` (under the image limits), then
`preprocess` (`flatten`, `framing`, `backdrop`, `upright`) into the model's input, the
measures stored beside it (`phash`, `quality`), `batch` and `model` (label, confidence and
embedding in one forward pass), `unknown` ("none of our categories") and `explain`
(Grad-CAM). It imports only `vitrine.pipeline.types`."""
