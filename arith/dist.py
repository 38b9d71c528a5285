"""torchrun helpers, so one command works under `python` and `torchrun --nproc_per_node=N`."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str | None = None) -> DistInfo:
    """Reads torchrun's environment; starts a process group (NCCL on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device(device)
    if world > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def is_main() -> bool:
    return not tdist.is_initialized() or tdist.get_rank() == 0


def print0(*args, **kwargs) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized():
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized():
        return all_reduce_sum(t) / tdist.get_world_size()
    return t


def broadcast_object(obj):
    """Rank 0's value of a picklable object on every rank."""
    if not tdist.is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def cleanup() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()
