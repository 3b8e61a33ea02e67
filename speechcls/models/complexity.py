"""What a model costs: parameters, and multiply-adds of one example's forward pass."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def complexity(model: nn.Module, in_shape: tuple[int, ...]) -> dict[str, int]:
    """{"parameters": every parameter's elements, "macs": multiply-adds of one (C, F, T) example's forward pass}.

    MACs are torch.utils.flop_counter.FlopCounterMode's FLOPs / 2, counted on a float32 CPU copy in eval
    mode with a batch of 1 (the model itself is left as it is). The counter counts convolutions (grouped
    and depthwise ones by their weights' actual size), matrix products and attention; not batch norm,
    activations, pooling, additions or other elementwise work: the convention of the papers' "multiply"
    and "MACs" columns, whose elementwise share is small.
    """
    probe = copy.deepcopy(model).to("cpu", torch.float32).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(torch.zeros(1, *in_shape))
    return {"parameters": sum(p.numel() for p in model.parameters()), "macs": counter.get_total_flops() // 2}
