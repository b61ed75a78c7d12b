"""Distributed training under ``torchrun``: process group set-up and a gather that keeps gradients.

Triplet mining compares every embedding of the *global* batch with every other, so each
process gathers all processes' embeddings before the loss. The gather is differentiable
(`GatherWithGrad`): every process computes the same global loss, the gather's
backward sums over processes the gradients that flow back to each process's own
embeddings, and DistributedDataParallel's averaging then yields exactly the gradient of
one process on the concatenated batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def env_rank() -> int:
    """This process's rank as torchrun announced it (valid before the group is joined)."""
    return int(os.environ.get("RANK", "0"))


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> torch.device:
    """Join the process group torchrun prepared (gloo on CPU, NCCL on GPU).

    Returns the device this process should use (``cuda:LOCAL_RANK`` on GPU).
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return device


def teardown() -> None:
    """Leave the process group together: a process that leaves while another still
    talks to it makes gloo abort the other."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0, in rank order, keeping gradients.

    Processes may hold different numbers of rows (a P×K batch is short when an identity
    has fewer than K samples): rows are padded to the longest, gathered, then trimmed.
    """
    if world_size() == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.cat([x, x.new_zeros((longest - x.shape[0],) + x.shape[1:])]) if x.shape[0] < longest else x
    parts = GatherWithGrad.apply(padded).chunk(world_size())
    return torch.cat([part[: int(size.item())] for part, size in zip(parts, sizes)])


class GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each process the sum, over all
    processes, of the gradient for its own rows (all-reduce, then keep one's slice:
    gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]
