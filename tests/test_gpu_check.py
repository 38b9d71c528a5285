"""scripts/gpu_check.sh --dry-run: the GPU check's every part on CPU with tiny sizes (about a minute), so the
script a GPU lease runs once (docs/GPU.md) is known to work before the lease."""

import json
import os
import subprocess
import time

import pytest

from tests.conftest import ROOT

PARTS = ["env", "a_install", "b_cuda_tests", "c_bench_train", "d_dist", "e_paper_run", "f_grid"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    work = tmp_path_factory.mktemp("gpu_check_work")
    env = {**os.environ, "GPU_CHECK_WORK": str(work), "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - t0
    log = (out / "gpu_check.log").read_text() if (out / "gpu_check.log").exists() else ""
    return proc, out, seconds, log


@pytest.mark.slow
def test_dry_run_runs_every_part_and_summarizes(dry_run):
    proc, out, seconds, log = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True
    parts = summary["parts"]
    assert list(parts)[: len(PARTS)] == PARTS
    for name in PARTS:
        p = parts[name]
        assert p["rc"] is not None, (name, p)
        assert p["seconds"] is not None and p["limit"], (name, p)
        # every part can run on CPU: the CUDA tests skip, the rest succeed
        assert p["rc"] == 0, (name, p, log[-4000:])
    assert parts["b_cuda_tests"]["status"] == "skipped: no CUDA"
    assert all(parts[n]["status"] == "ok" for n in PARTS if n != "b_cuda_tests"), parts
    md = (out / "summary.md").read_text()
    for name in PARTS:
        assert f"| {name} |" in md and f"## {name}:" in md, name
    assert seconds < 240, f"the dry run took {seconds:.0f} s (goal: under 2 minutes on an idle machine)"
    # the device tool returns at most 8 files from OUT, none deeper than 2 folders
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
    assert {"gpu_check.log", "results.jsonl", "summary.md", "summary.json"} <= {p.name for p in files}


@pytest.mark.slow
def test_dry_run_numbers(dry_run):
    _, out, _, _ = dry_run
    parts = json.loads((out / "summary.json").read_text())["parts"]
    nums = {name: p["numbers"] for name, p in parts.items()}
    assert nums["env"]["torch"] and nums["env"]["cuda_available"] is False
    assert nums["a_install"]["imports_ok"] and nums["a_install"]["torch_unchanged"]
    rows = nums["c_bench_train"]["rows"]
    assert {(r["config"], r["attention"]) for r in rows} == {
        ("nope_16x1", "sdpa"),
        ("fire_16x1", "sdpa"),
        ("paper_16x1", "sdpa"),
    }
    assert all(r["step_ms"] > 0 and r["tok_s"] > 0 and r["mfu"] > 0 for r in rows)
    assert nums["c_bench_train"]["fire_sdpa_over_nope_sdpa"] > 0
    d = nums["d_dist"]
    assert d["backend"] == "gloo" and d["all_reduce_ok"] and d["ddp_grad_ok"] and d["resume_ok"], d
    e = nums["e_paper_run"]
    assert e["steps"] == 30 and e["diagonal_cells"] == 6, e
    assert (out / "diagonal.csv").exists()
    f = nums["f_grid"]
    assert (
        f["sampled_cells"] >= f["sampled_groups"] >= 1
        and f["group_seconds_mean"] > 0
        and f["problems"] == 8 * 8 * 10
    )
    assert (
        f["groups"] == 15
    )  # one group per length sum 2..16: a batch of 256 holds any diagonal's 10-problem cells
    assert f["grid_minutes_est"] == pytest.approx(f["groups"] * f["group_seconds_mean"] / 60, abs=0.01)
    assert f["compare_problems"] == 4 * 25 and 0 <= f["bf16_fp32_disagreements"] <= 100
