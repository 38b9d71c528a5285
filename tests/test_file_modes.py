"""Shareable runs: what a run, an evaluation, an export or a report writes takes the process umask (0644 files
and 0755 folders under umask 022, 0600 / 0700 under 077), atomic writes included: mkstemp and mkdtemp make
0600 / 0700 whatever the umask, so every temporary file or folder renamed into place is given the umask's mode
first."""

import os
import stat
from pathlib import Path

import pytest

from arith import checkpoint
from arith.eval.grid import Cell, GridCSV
from arith.files import atomic_write_text, umask_mode
from arith.lock import RunLock

TINY = [
    "model.width=32",
    "model.heads=2",
    "model.ffn=64",
    "model.layers=1",
    "model.recurrences=1",
    "model.max_pos=32",
    "model.max_k=3",
    "data.max_len=1",
    "data.streaming=true",
    "train.batch_size=8",
    "train.steps=4",
    "train.save_every_steps=2",
    "train.ema=0.9",
    "train.progress=false",
    "train.threads=1",
    "name=shared",
]


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def expected(mask: int) -> tuple[int, int]:
    """(file mode, folder mode) under ``mask``."""
    return 0o666 & ~mask, 0o777 & ~mask


def assert_tree(root: Path, mask: int) -> int:
    """Every file and folder under ``root`` (and ``root``) has the umask's mode; returns the files seen."""
    file_mode, dir_mode = expected(mask)
    wrong = [
        f"{p.relative_to(root.parent)}: {oct(mode(p))}"
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and mode(p) != (dir_mode if p.is_dir() else file_mode)
    ]
    assert not wrong, f"want {oct(file_mode)} / {oct(dir_mode)} under umask {oct(mask)}: {wrong}"
    return sum(p.is_file() for p in root.rglob("*"))


def test_umask_mode_reads_the_umask_and_leaves_it(umask):
    assert umask_mode() == expected(umask)[0]
    assert umask_mode(dirs=True) == expected(umask)[1]
    assert os.umask(umask) == umask  # reading it changed nothing


def test_atomic_write_takes_the_umask_over_an_older_file(umask, tmp_path):
    path = tmp_path / "sub" / "notes.txt"
    atomic_write_text(path, "one")
    assert mode(path) == expected(umask)[0]
    os.chmod(path, 0o600)  # as written before the fix: the rewrite does not keep it
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and mode(path) == expected(umask)[0]
    assert mode(path.parent) == expected(umask)[1]
    assert [p.name for p in path.parent.iterdir()] == ["notes.txt"]  # no temporary file left


def test_grid_csv_and_lock_file(umask, tmp_path):
    csv = GridCSV(tmp_path / "eval" / "addition_s0of1.csv")
    csv.append("addition", Cell(1, 1), 4, 3)
    csv.append("addition", Cell(2, 2), 4, 1)
    with RunLock(tmp_path / "run"):
        assert mode(tmp_path / "run" / "trainer.lock") == expected(umask)[0]
    assert_tree(tmp_path / "eval", umask)


def test_self_improvement_round_folder(umask, tmp_path):
    import numpy as np

    from arith.selfimprove.label import load_round, save_round

    prompts = [np.array([1, 2, 3]), np.array([4, 5, 6])]
    path = tmp_path / "pseudo" / "round_1"
    ids = save_round(path, prompts, [1, 1], [1, 1], [(0, [7, 8], 1.0), (1, [9], 0.5)], {"kept": {"1": 2}})
    assert load_round(path)[0] == ids
    assert assert_tree(tmp_path / "pseudo", umask) >= 2


def test_run_evaluation_export_and_report_are_shareable(umask, compose, tmp_path):
    """A real tiny run (config.yaml, tokenizer.json, the lock, metrics, checkpoints/<step> with safetensors
    weights and EMA, latest), a real grid evaluation, an export and a report: every file and folder they make
    has the umask's mode."""
    import arith
    from arith.eval.runner import run_grid
    from arith.report import write_report
    from arith.runs import export
    from arith.train import train

    run_dir = train(compose([*TINY, f"runs_root={tmp_path / 'runs'}"]))
    steps = checkpoint.step_dirs(run_dir)
    assert [d.name for d in steps] == ["2", "4"]
    assert (steps[-1] / checkpoint.WEIGHTS).is_file() and (steps[-1] / checkpoint.EMA_WEIGHTS).is_file()
    run_grid(compose([f"run={run_dir}", "eval.a_lens=[1,1]", "eval.n_per_cell=4"], config_name="eval"), False)
    (grid_csv,) = (run_dir / "eval").glob("*.csv")
    n = assert_tree(run_dir, umask)
    assert n >= 10, sorted(p.name for p in run_dir.rglob("*"))

    os.chmod(grid_csv, 0o600)  # a CSV written before the fix: the export's copy takes the umask, not its mode
    out = export(run_dir, tmp_path / "export")
    assert (out / checkpoint.WEIGHTS).is_file() and (out / "eval" / grid_csv.name).is_file()
    assert_tree(out, umask)
    again = arith.load(out).save_pretrained(tmp_path / "export2")  # an export of an export copies its eval
    assert (again / "eval" / grid_csv.name).is_file()
    assert_tree(again, umask)

    page = write_report([run_dir], tmp_path / "report")
    assert page.is_file() and any(page.parent.glob("*.png"))
    assert_tree(page.parent, umask)


def test_dataset_on_disk_is_shareable(umask, compose, tmp_path):
    from arith.data import datasets

    cfg = compose(["data.max_len=2", "data.n_train=500", f"data.root={tmp_path}"]).data
    path = datasets.build(cfg, progress=False)
    assert assert_tree(path, umask) > 0
