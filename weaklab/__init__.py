"""weaklab: hyperparameter studies of weakly-supervised learning methods with Ray Tune.

The path a study takes, one package per step:
``data`` (clean tensors) -> ``settings`` (weak labels) -> ``methods`` + ``models`` ->
``engine`` (training loop, no Ray) -> ``tune`` (trainable, Tuner) -> ``store`` (Parquet)
-> ``analysis`` (figures and tables from Parquet only).
"""

__version__ = "0.1.0"
