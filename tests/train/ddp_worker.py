"""One rank of the data-parallel test (started by torchrun from test_train_ddp.py).

Each rank works in its own folder ``BASE/rankR`` and trains into the relative ``--out run``,
so a file written by any rank but 0 would show up under its own folder. The rank's final
weights go to ``BASE/weights-rankR.safetensors`` (written by this script, not the trainer).
"""

import os
import sys
from pathlib import Path

from safetensors.torch import save_file

from nnatlas.train import TrainConfig, train

base = Path(sys.argv[1])
rank = int(os.environ["RANK"])
work = base / f"rank{rank}"
work.mkdir(parents=True, exist_ok=True)
os.chdir(work)
result = train(TrainConfig(model="lenet", epochs=1, limit_train=96, limit_test=40, batch_size=16, seed=1, out="run", report=False), progress=False)
save_file({k: v.detach().contiguous() for k, v in result.model.state_dict().items()}, str(base / f"weights-rank{rank}.safetensors"))
