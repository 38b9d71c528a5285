"""SLURM without torchrun: N tasks of one job (srun, submitit) become one DDP run from SLURM's variables."""

import os
import socket
import subprocess
import sys

import pytest

from arith.dist import first_host, slurm_env
from tests.conftest import ROOT
from tests.test_dist import SAME, assert_same_run, one_process


@pytest.mark.parametrize(
    "nodelist, host",
    [
        ("node7", "node7"),
        ("gpu[003-004,7],cpu1", "gpu003"),
        ("a-b[12,3]", "a-b12"),
        ("localhost,x[1-2]", "localhost"),
    ],
)
def test_first_host_of_a_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_slurm_variables_map_to_torchrun_ones_only_for_several_tasks():
    job = {"SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "n[08-09]"}
    env = slurm_env({**job, "SLURM_JOB_ID": "4242"})
    assert env == {
        "WORLD_SIZE": "4",
        "RANK": "3",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "n08",
        "MASTER_PORT": "24242",
    }
    assert slurm_env({**job, "MASTER_ADDR": "head", "MASTER_PORT": "1234"})["MASTER_ADDR"] == "head"
    assert slurm_env({**job, "WORLD_SIZE": "2"}) == {}, "torchrun's variables win"
    assert slurm_env({**job, "SLURM_NTASKS": "1"}) == {}, "one task: no process group"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_tasks_from_slurm_variables_match_one_process(compose, tmp_path):
    ref_dir = one_process(compose, tmp_path / "one", "train.steps=6")
    base = {
        k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR")
    }
    base.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MASTER_PORT=str(free_port()))
    base.update(SLURM_NTASKS="2", SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="77")
    cmd = [sys.executable, str(ROOT / "pretrain.py"), *SAME, f"runs_root={tmp_path / 'two'}", "train.steps=6"]
    tasks = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    try:
        outs = [t.communicate(timeout=300) for t in tasks]
    finally:  # a hung rank must not outlive the test
        for t in tasks:
            if t.poll() is None:
                t.kill()
                t.wait()
    assert [t.returncode for t in tasks] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "world 2" in outs[0][0] and outs[1][0] == "", "one DDP run: rank 0 prints, rank 1 does not"
    assert_same_run(ref_dir, tmp_path / "two" / "ddp")
