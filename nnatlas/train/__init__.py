"""Training: tasks that fit a model to a data set, a resumable trainer, data-parallel runs.

>>> from nnatlas.train import TrainConfig, train
>>> result = train(TrainConfig(model="lenet", epochs=1, out="runs/demo"))  # doctest: +SKIP
>>> result.final["test_acc"]  # doctest: +SKIP

The command line is ``nnatlas train MODEL`` and ``nnatlas eval DIR`` (``nnatlas/train/cli.py``);
under ``torchrun --nproc_per_node N -m nnatlas train ...`` each process is one rank.
"""

from nnatlas.train.checkpoint import CheckpointError
from nnatlas.train.tasks import Plan, resolve
from nnatlas.train.trainer import DivergedError, TrainConfig, TrainResult, evaluate, evaluate_run, train, write_model_report

__all__ = [
    "CheckpointError",
    "DivergedError",
    "Plan",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "evaluate_run",
    "resolve",
    "train",
    "write_model_report",
]
