"""Training: tasks that fit a model to a data set, a resumable trainer, data-parallel runs.

>>> from nnatlas.train import TrainConfig, train
>>> result = train(TrainConfig(model="lenet", epochs=1, out="runs/demo"))  # doctest: +SKIP
>>> result.final["test_acc"]  # doctest: +SKIP

The command line is ``nnatlas train MODEL`` and ``nnatlas eval DIR`` (``nnatlas/train/cli.py``);
under ``torchrun --nproc_per_node N -m nnatlas train ...`` each process is one rank.
"""

from nnatlas.train.checkpoint import CheckpointError
from nnatlas.train.tasks import Option, Plan, Task, register_task, task_class
from nnatlas.train.trainer import DivergedError, TrainConfig, Trained, TrainResult, evaluate, evaluate_run, load, train, write_model_report

__all__ = [
    "CheckpointError",
    "DivergedError",
    "Option",
    "Plan",
    "Task",
    "TrainConfig",
    "TrainResult",
    "Trained",
    "evaluate",
    "evaluate_run",
    "load",
    "register_task",
    "task_class",
    "train",
    "write_model_report",
]
