"""How an epoch is cut: the (seed, epoch) order, batches, and each rank's part of every global batch.
Pure functions of sizes: the resident loaders, the streaming loader and DDP training share them."""

from __future__ import annotations

import numpy as np


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of an epoch: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_bounds(n: int, batch_size: int, min_last: int = 2) -> list[tuple[int, int]]:
    """[start, end) of each batch; a last batch under `min_last` examples (one, by default) joins the
    one before it (BatchNorm1d cannot train on one example)."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def global_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """[start, end) of each global batch (batch_size examples per rank, all ranks together)."""
    return batch_bounds(n, batch_size * world, min_last=2 * world)


def shard_bounds(n: int, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[int, int]]:
    """This rank's [start, end) ranges in the epoch order. Each global batch of batch_size x world
    examples is cut into `world` contiguous parts whose sizes differ by one at most, so every rank
    takes the same number of steps and the ranks together see every example exactly once, without
    padding; a last global batch too small to give each rank two examples joins the one before it.
    With world == 1 this is batch_bounds(n, batch_size)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    if n < 2 * world:
        raise ValueError(f"{n} examples cannot give each of {world} ranks two (BatchNorm needs two)")
    return [rank_part(a, b, rank, world) for a, b in global_bounds(n, batch_size, world)]


def rank_part(a: int, b: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's contiguous part of [a, b): `world` parts whose sizes differ by one at most."""
    base, extra = divmod(b - a, world)
    start = a + rank * base + min(rank, extra)
    return start, start + base + (rank < extra)
