"""torch.distributed for `rat train`: one process per GPU (or CPU worker), launched by
`torchrun`, DistributedDataParallel, rank 0 alone writes files.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them (a plain `rat train`) this
is a single process and nothing is initialised. The backend is NCCL on CUDA and gloo
on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "init_distributed", "wrap_model", "unwrap", "barrier", "shutdown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank in [0, world_size); local_rank picks its GPU."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and reports."""
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun prepared (if any).

    device: the device chosen for this run; for CUDA each process takes
    cuda:LOCAL_RANK. Returns the context and this process's device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local, backend), device


def wrap_model(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around `model` when distributed (gradients averaged across ranks), else as is."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (what checkpoints store)."""
    return getattr(model, "module", model)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
