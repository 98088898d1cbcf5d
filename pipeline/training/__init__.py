"""Making models: the recipes (`train`, `corrections`), their Keras side (`fitting`), the
data (`datasets`) and augmentation (`augment`, `degrade`)."""
