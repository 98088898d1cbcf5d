"""Pure logic: no Celery, no SQL, no settings. `types` is the vocabulary every room
shares; `inference` is what a worker runs on a photo (decode through the model),
`training` makes models, `synthetic` makes photos to measure with, and `evaluation`
scores what the others produce."""
