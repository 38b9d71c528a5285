"""torchrun helpers, so one command works under `python`, `torchrun --nproc_per_node=N` and SLURM tasks."""

from __future__ import annotations

import gc
import importlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from arith.errors import ArithError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[003-004,7],cpu1`` -> ``gpu003`` (zero padding kept)."""
    head = re.match(r"[^,\[]*(\[[^\]]*\])?", nodelist.strip()).group(0)
    prefix, _, ranges = head.partition("[")
    return prefix + re.split(r"[-,]", ranges)[0] if ranges else prefix


def slurm_env(env=os.environ) -> dict[str, str]:
    """torchrun's variables from SLURM's, for a job of several tasks (``srun``, submitit) without torchrun.

    Empty when torchrun's WORLD_SIZE is set (torchrun wins) or the job has a single task. Every task gets the
    same master: the first node of the job, on a port drawn from the job id so that two jobs sharing a node do
    not collide; MASTER_ADDR / MASTER_PORT already in the environment are kept.
    """
    if "WORLD_SIZE" in env or int(env.get("SLURM_NTASKS", "1")) <= 1 or "SLURM_PROCID" not in env:
        return {}
    nodes = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "localhost"
    return {
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "RANK": env["SLURM_PROCID"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes),
        "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000),
    }


def init(device: str | None = None) -> DistInfo:
    """Reads torchrun's environment (or SLURM's, mapped by `slurm_env`); starts a process group (NCCL on CUDA,
    gloo on CPU) when WORLD_SIZE > 1."""
    os.environ.update(slurm_env())
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
        # torch 2.13: importing torch._dynamo (DDP does it on first use) while a process group exists keeps
        # that group alive past destroy_process_group, so its gloo worker and socket threads run on through
        # the interpreter's shutdown, racing the other ranks' exits (a rank killed by SIGABRT, "terminate
        # called without an active exception", or hung in exit). Imported first, the group is freed and its
        # threads joined by cleanup(); tests/test_dist.py checks that none is left.
        importlib.import_module("torch._dynamo")
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


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized():
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
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


def main_only(fn, share: bool = False):
    """fn() on rank 0 alone (a write, a lock); the other ranks wait for it, and raise its ArithError too, so
    that no rank is left waiting in a collective for one that failed. share: every rank gets fn's result
    (picklable); otherwise the others get None."""
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except ArithError as e:
            error = e
    if tdist.is_initialized():
        error, shared = broadcast_object((error, result if share else None))
        result = result if is_main() else shared
    if error is not None:
        raise error
    return result


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def cleanup(synchronize: bool = True) -> None:
    """Tear the process group down on every rank before the interpreter exits (idempotent).

    synchronize: a barrier first, so that no rank closes its connections while another is still in a
    collective; pass False on an error path, where the other ranks may never reach it. The garbage
    collection frees DDP's reference cycle, which holds the group, so that destroying it joins its threads.
    """
    if not tdist.is_initialized():
        return
    if synchronize:
        tdist.barrier()
    gc.collect()
    tdist.destroy_process_group()
