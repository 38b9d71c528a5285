"""torchrun helpers, so one command works under `python`, `torchrun --nproc_per_node=N` and SLURM tasks."""

from __future__ import annotations

import gc
import importlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from arith.errors import ArithError, ConfigError

DEVICES = ("auto", "cpu", "cuda")  # train.device
_host_group = None  # a gloo group for host values beside an NCCL default group (`host_sum`)


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


def pick_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """train.device: auto (None) -> $ARITH_DEVICE when set (cpu or cuda), else CUDA when a GPU is visible, else
    the CPU; cuda without a GPU is a ConfigError. A CUDA rank gets GPU local_rank modulo the visible ones: SLURM's
    per-task binding shows each task its own GPU alone (as cuda:0) whatever its local id."""
    device = "auto" if device is None else str(device)
    if device == "auto" and os.environ.get("ARITH_DEVICE", "auto") != "auto":
        device = os.environ["ARITH_DEVICE"]
        if device not in DEVICES:
            raise ConfigError(f"ARITH_DEVICE={device!r} unknown; valid: {', '.join(DEVICES)}")
    if device not in DEVICES:
        raise ConfigError(f"train.device={device!r} unknown; valid: {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(
            "train.device=cuda but no GPU is visible (train.device=auto or cpu runs on the CPU)"
        )
    return torch.device("cuda", local_rank % count)


def cpuinfo_has_amx() -> bool | None:
    """Whether the kernel's CPU flags (/proc/cpuinfo) list `amx_bf16`; None where there is no such file."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return None


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), where oneDNN's bf16 matrix products run
    3-5x faster than float32 ones at the training step's shapes (docs/BENCHMARKS.md, "bf16 autocast on an AMX CPU")."""
    # torch's probe is private in torch 2.13; the kernel's flags where it is missing
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else bool(cpuinfo_has_amx())


def use_bf16(device: torch.device, bf16: bool, cpu_bf16: bool | None) -> bool:
    """Whether training runs under bf16 autocast: train.bf16 on CUDA; on the CPU train.cpu_bf16 as well, where null
    (auto) means on exactly when the CPU has AMX tiles (`cpu_has_amx`)."""
    if not bf16:
        return False
    if device.type == "cuda":
        return True
    return cpu_has_amx() if cpu_bf16 is None else bool(cpu_bf16)


def init(device: str | None = None) -> DistInfo:
    """Reads torchrun's environment (or SLURM's, mapped by `slurm_env`); starts a process group (NCCL on CUDA,
    gloo on CPU) when WORLD_SIZE > 1. device: train.device (auto, cpu, cuda; None = auto)."""
    global _host_group
    os.environ.update(slurm_env())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not tdist.is_initialized():
        # torch 2.13: importing torch._dynamo (DDP does it on first use) while a process group exists keeps
        # that group alive past destroy_process_group, so its gloo worker and socket threads run on through
        # the interpreter's shutdown, racing the other ranks' exits (a rank killed by SIGABRT, "terminate
        # called without an active exception", or hung in exit). Imported first, the group is freed and its
        # threads joined by cleanup(); tests/test_dist.py checks that none is left.
        importlib.import_module("torch._dynamo")
        tdist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cuda":  # host values (the training loop's per-step agreement) go over gloo, not NCCL
            _host_group = tdist.new_group(backend="gloo")
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


def global_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `valid`, over the *global* batch: this rank's masked sum divided by the global count,
    times the world size, so that DDP's gradient averaging yields the single-process gradient."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    count = all_reduce_sum(valid.sum().to(values.dtype)).clamp_min(1)
    return (values * valid).sum() * world / count


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized():
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized():
        return all_reduce_sum(t) / tdist.get_world_size()
    return t


def host_sum(values: list[float]) -> list[float]:
    """The sum over ranks of a few host numbers, summed in float64 on the CPU (over the default group when it is
    gloo, else over a gloo group of its own): no GPU work, so no host-device sync, unlike a CUDA tensor read
    back with `.tolist()`."""
    t = torch.tensor(values, dtype=torch.float64)
    if tdist.is_initialized():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM, group=_host_group)
    return t.tolist()


def broadcast_object(obj):
    """Rank 0's value of a picklable object on every rank."""
    if not tdist.is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's value of a picklable object, in rank order, on every rank; over the host group (gloo), so
    CPU tensors in it are fine beside NCCL. One process: [obj]."""
    if not tdist.is_initialized():
        return [obj]
    out = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj, group=_host_group)
    return out


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
    global _host_group
    if synchronize:
        tdist.barrier()
    gc.collect()
    _host_group = None
    tdist.destroy_process_group()
