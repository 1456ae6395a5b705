"""PyTorch's own DDP, started by `torchrun`: process group from the environment, gathers, rank-0-only writes.

Without torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()  # the default where a caller trains or predicts in one process


def init_from_env(use_cuda: bool) -> DistributedContext:
    """Join the process group torchrun describes (nccl on GPU, gloo on CPU); single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank, world_size, local_rank)


def gather_predictions(
    context: DistributedContext, rows: np.ndarray, probs: dict[str, np.ndarray], n_rows: int, positions: dict[int, int]
) -> dict[str, np.ndarray]:
    """Assemble every rank's (rows, probs) into arrays ordered like the full validation set."""
    if not context.enabled:
        return probs
    parts: list = [None] * context.world_size
    dist.all_gather_object(parts, (rows, probs))
    names = list(probs)
    full = {name: np.zeros((n_rows, probs[name].shape[1]), np.float32) for name in names}
    for part_rows, part_probs in parts:
        where = np.asarray([positions[int(r)] for r in part_rows], dtype=np.int64)
        for name in names:
            full[name][where] = part_probs[name]
    return full


def all_sum(context: DistributedContext, *values: float) -> list[float]:
    """Sum scalars over ranks."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def average_gradients(context: DistributedContext, parameters) -> None:
    """Average the gradients of parameters DDP does not own (e.g. a loss's learned weights) over ranks."""
    if not context.enabled:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad.div_(context.world_size)


def assert_same_on_all_ranks(context: DistributedContext, values: torch.Tensor, what: str) -> None:
    """Stop with a clear error when a value every rank must share has drifted apart (a DDP bug, not user error)."""
    if not context.enabled:
        return
    local = values.detach().float().flatten().contiguous()  # on the rank's device (nccl needs CUDA)
    gathered = [torch.empty_like(local) for _ in range(context.world_size)]
    dist.all_gather(gathered, local)
    if not all(torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError(f"{what} differ across DDP ranks: {[g.tolist() for g in gathered]}")


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
