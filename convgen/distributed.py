"""Distributed training under ``torchrun``: process group set-up and a gather that keeps gradients.

Triplet mining compares every embedding of the *global* batch with every other, so each
process gathers all processes' embeddings before the loss. The gather is differentiable
(``torch.distributed.nn.functional.all_gather``): every process computes the same global
loss, the gather's backward sums the gradients that flow back to each process's own
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
    if dist.is_available() and dist.is_initialized():
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
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.cat([x, x.new_zeros((longest - x.shape[0],) + x.shape[1:])]) if x.shape[0] < longest else x
    if x.requires_grad:
        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(world_size())]
        dist.all_gather(parts, padded)
    return torch.cat([part[: int(size.item())] for part, size in zip(parts, sizes)])
