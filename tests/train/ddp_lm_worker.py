"""One rank of the language-model data-parallel test (started by torchrun from test_task_language.py).

As ddp_worker.py: each rank works in ``BASE/rankR`` and trains into the relative ``--out run``;
its final weights go to ``BASE/weights-rankR.safetensors``. The model is lstm_lm at a tiny size
(a recurrent stack: the gradients of every time step are all-reduced once per step).
"""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from nnatlas.train import TrainConfig, train

base, data_dir = Path(sys.argv[1]), sys.argv[2]
rank = int(os.environ["RANK"])
work = base / f"rank{rank}"
work.mkdir(parents=True, exist_ok=True)
os.chdir(work)
cfg = TrainConfig(model="lstm_lm", data_dir=data_dir, epochs=1, limit_train=24, limit_test=8, batch_size=4, seed=1, out="run",
                  report=False, model_args={"hidden_size": 16}, task_options={"context": 16})
result = train(cfg, progress=False)
save_file({k: v.detach().contiguous() for k, v in result.model.state_dict().items()}, str(base / f"weights-rank{rank}.safetensors"))
