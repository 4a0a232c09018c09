"""Tasks as plug-ins: one module per group of task kinds, each registering its :class:`Task`.

See :mod:`nnatlas.train.tasks.base` for the interface. Importing this package registers every
task; ``nnatlas train`` picks the one that the model card's ``task`` names.
"""

from nnatlas.train.tasks.base import Batch, Option, Plan, Task, check_fit, datasets_for, register_task, task_class, trainable_kinds
from nnatlas.train.tasks import vision  # noqa: F401  (registers classification, binary, regression)
from nnatlas.train.tasks import segmentation  # noqa: F401  (registers segmentation)
from nnatlas.train.tasks import language  # noqa: F401  (registers language_model)
from nnatlas.train.tasks import translation  # noqa: F401  (registers translation)
from nnatlas.train.tasks import masked_lm  # noqa: F401  (registers masked_lm)
from nnatlas.train.tasks import graph  # noqa: F401  (registers node_classification)
from nnatlas.train.tasks import sequence  # noqa: F401  (registers sequence_classification)
from nnatlas.train.tasks import forecast  # noqa: F401  (registers forecast)
from nnatlas.train.tasks import generative  # noqa: F401  (registers reconstruction, vae)
from nnatlas.train.tasks import diffusion  # noqa: F401  (registers diffusion)
from nnatlas.train.tasks import pointer  # noqa: F401  (registers pointer)

__all__ = ["Batch", "Option", "Plan", "Task", "check_fit", "datasets_for", "register_task", "task_class", "trainable_kinds"]
