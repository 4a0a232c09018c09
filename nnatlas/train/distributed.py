"""Data-parallel training with ``torch.distributed``, set up from torchrun's environment.

``torchrun --nproc_per_node N -m nnatlas train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them, joins the
process group (NCCL when the run is on CUDA, gloo otherwise) and returns a :class:`DistContext`.
Without those variables the context is the single process (rank 0 of 1) and nothing is
initialised.

Sharding follows ``DistributedSampler``: one seeded permutation per epoch, padded by wrapping
round to a multiple of the world size, rank ``r`` taking elements ``r, r + N, r + 2N, ...``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "setup", "shard_order"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether a process group is joined (torchrun, even with one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (float64 sums stay exact for counts); returns ``t``."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def check_in_sync(self, module: torch.nn.Module) -> None:
        """Raise if any rank's parameters or buffers differ from rank 0's (bitwise)."""
        if not self.enabled:
            return
        mismatched = []
        for name, t in list(module.state_dict().items()):
            mine = t.detach().clone()
            ref = mine.clone()
            dist.broadcast(ref, src=0)
            if not torch.equal(mine, ref):
                mismatched.append(name)
        flag = torch.tensor([float(len(mismatched))], device=next(iter(module.state_dict().values())).device)
        self.all_reduce_sum(flag)
        if flag.item() > 0:
            raise RuntimeError(f"rank {self.rank}: weights differ between ranks after training ({mismatched[:4]} on this rank)")

    def close(self, *, finished: bool = False) -> None:
        """Leave the process group; after a run every rank finished, wait for the others first (a rank that
        tears down its gloo pairs while a peer still uses them kills that peer: "terminate called without an
        active exception")."""
        if self.enabled and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from None


def setup(device_type: str) -> DistContext:
    """Join the process group torchrun describes, or return the single-process context.

    ``device_type`` is ``"cuda"`` or ``"cpu"``: NCCL for CUDA, gloo for CPU. On CUDA each
    process takes the GPU ``LOCAL_RANK``.
    """
    world = _env_int("WORLD_SIZE")
    rank = _env_int("RANK")
    if world is None or rank is None:  # not started by torchrun
        return DistContext()
    local = _env_int("LOCAL_RANK") or 0
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; lower --nproc_per_node")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        kwargs = {"device_id": torch.device("cuda", local)} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    log.debug("rank %d of %d joined the %s process group", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def shard_order(n: int, *, world_size: int, rank: int, generator: torch.Generator | None) -> torch.Tensor:
    """This rank's sample order for one epoch (``DistributedSampler`` semantics).

    With a ``generator`` the permutation is random (the same on every rank, since every rank
    seeds it the same way); without one the order is ``0..n-1``. The list is padded by
    wrapping round so that every rank gets ``ceil(n / world_size)`` samples.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    per_rank = -(-n // world_size)
    total = per_rank * world_size
    if total > n:
        reps = -(-total // n)
        order = order.repeat(reps)[:total]
    return order[rank:total:world_size]
