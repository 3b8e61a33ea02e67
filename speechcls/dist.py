"""torch.distributed as torchrun sets it up (RANK, WORLD_SIZE, LOCAL_RANK in the environment): NCCL on
GPUs, gloo on CPUs. A plain process is rank 0 of 1 and never touches torch.distributed.

Also the one piece torch lacks for CPU ranks: a synchronized BatchNorm over gloo (`HostSyncBatchNorm`);
torch's nn.SyncBatchNorm refuses CPU tensors ("expected input tensor to be on GPU or XPU").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td
from torch import nn


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
    return Rank(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init(device: str) -> Rank:
    """Join the process group torchrun describes (once); returns this process's rank."""
    r = from_env()
    if r.distributed and not td.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(r.local)  # NCCL and the object collectives use the current device
        td.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return r


def barrier(r: Rank) -> None:
    if r.distributed:
        td.barrier()


def broadcast(r: Rank, value):
    """Rank 0's `value` on every rank (any picklable object, an exception included)."""
    if not r.distributed:
        return value
    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def from_main(r: Rank, fn):
    """`fn()` run by rank 0 alone, its result on every rank. A ValueError it raises (a refusal a user can
    cause) is raised on every rank, so no rank goes on to wait at a barrier for what will never come."""
    value = None
    if r.main:
        try:
            value = fn()
        except ValueError as e:
            value = e
    value = broadcast(r, value)
    if isinstance(value, ValueError):
        raise value
    return value


def gather(r: Rank, value) -> list:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not r.distributed:
        return [value]
    out = [None] * r.world
    td.all_gather_object(out, value)
    return out


def all_reduce_sum(r: Rank, tensor: torch.Tensor) -> torch.Tensor:
    """In place: the sum over ranks (identical on every rank)."""
    if r.distributed:
        td.all_reduce(tensor)
    return tensor


def broadcast_buffers(r: Rank, module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, so every rank evaluates the model
    rank 0 checkpoints."""
    if r.distributed:
        for b in module.buffers():
            td.broadcast(b, src=0)


def local_device(device: str, r: Rank) -> str:
    """One GPU per process: cuda -> cuda:<LOCAL_RANK> under torchrun."""
    return f"cuda:{r.local}" if device == "cuda" and r.distributed else device


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum that every rank uses is the sum of the
    ranks' gradients. (torch.distributed.nn.functional.all_reduce does this but is deprecated, and the
    functional collectives' autograd is newer than the torch versions we support.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        td.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone()
        td.all_reduce(g)
        return g


class HostSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across ranks, on any device
    and backend (gloo included): per-channel sums are all-reduced by a differentiable all_reduce, so
    the backward pass is synchronized too. Two passes (mean, then
    squared deviations) like F.batch_norm, so a 2-rank step matches a 1-rank step on the same global
    batch to float tolerance. Outside training, or in a world of one, it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and td.is_available() and td.is_initialized() and td.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]  # every axis but the channels
        shape = (1, -1) + (1,) * (x.dim() - 2)
        count = all_reduce(torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        xc = x - mean.view(shape)
        var = all_reduce((xc * xc).sum(dims)) / count  # biased, as normalization uses
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / (count - 1)), alpha=m)  # unbiased
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm synchronized across ranks: torch's nn.SyncBatchNorm on CUDA (its fused kernels),
    HostSyncBatchNorm elsewhere. Parameters and buffers are kept (the same tensors), so state dicts keep
    their keys and load into the plain model."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, HostSyncBatchNorm):
        new = HostSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module
