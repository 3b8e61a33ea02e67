"""torch.distributed as torchrun sets it up (RANK, WORLD_SIZE, LOCAL_RANK in the environment): NCCL on
GPUs, gloo on CPUs. A plain process is rank 0 of 1 and never touches torch.distributed."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def from_env() -> Rank:
    return Rank(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def init(device: str) -> Rank:
    """Join the process group torchrun describes (once); returns this process's rank."""
    r = from_env()
    if r.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return r


def barrier(r: Rank) -> None:
    if r.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast(r: Rank, value):
    """Rank 0's `value` on every rank (any picklable object, an exception included)."""
    if not r.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def local_device(device: str, r: Rank) -> str:
    """One GPU per process: cuda -> cuda:<LOCAL_RANK> under torchrun."""
    return f"cuda:{r.local}" if device == "cuda" and r.distributed else device
