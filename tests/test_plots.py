"""Heatmaps and comparison plots from synthetic CSVs, and the plot_grid.py command line."""

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from arith.errors import DataError
from arith.eval.grid import GridCSV, grid_cells, read_results
from arith.plots import heatmap, plot_compare, plot_run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
name: {name}
data:
  task: {task}
  max_len: {n}
  max_len_b: {m}
model:
  abs_pos: abacus
  rel_pos: none
  layers: 2
  recurrences: 8
  input_injection: add
"""


def make_run(
    root: Path, name: str, task: str = "addition", train: int = 4, size: int = 10, config: bool = True
):
    """A run dir with a config and a grid whose accuracy falls off past the training length."""
    run = root / name
    extra = ("first_correct", "first_acc") if task == "sorting" else ()
    out = GridCSV(run / "eval" / f"{task}_s0of1.csv", extra_columns=extra)
    for cell in grid_cells([1, size]):
        correct = max(0, 10 - 2 * max(0, max(cell.a_len, cell.b_len) - train))
        kw = {"first_correct": min(10, correct + 3)} if extra else {}
        out.append(task, cell, n=10, correct=correct, **kw)
    if config:
        (run / "config.yaml").write_text(CONFIG.format(name=name, task=task, n=train, m="null"))
    return run


def read_png(path: Path) -> np.ndarray:
    assert path.stat().st_size > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4) and min(img.shape[:2]) > 200
    return img


def test_heatmap_draws_grid_outline_and_numbers(tmp_path):
    run = make_run(tmp_path, "r", size=5)
    fig = Figure()
    ax = fig.subplots()
    im = heatmap(ax, read_results(run), train_region=(4, 4), title="t")
    arr = im.get_array()
    assert arr.shape == (5, 5) and arr.max() == 100 and arr.min() == 80
    assert len(ax.texts) == 25 and ax.texts[0].get_text() == "100"
    assert len(ax.patches) == 1  # the training-region outline
    assert ax.get_ylabel() == "length of operand 1" and ax.get_xlabel() == "length of operand 2"
    fig2 = Figure()
    ax2 = fig2.subplots()
    heatmap(ax2, read_results(run), annotate=False)
    assert not ax2.texts and not ax2.patches


def test_plot_run_addition(tmp_path):
    run = make_run(tmp_path, "add_run")
    paths = plot_run(run)
    assert sorted(p.name for p in paths) == ["heatmap_addition.pdf", "heatmap_addition.png"]
    assert all(p.parent == run and p.stat().st_size > 0 for p in paths)
    read_png(run / "heatmap_addition.png")


def test_plot_run_sorting_two_panels(tmp_path):
    run = make_run(tmp_path, "sort_run", task="sorting")
    (png, _) = plot_run(run)
    img = read_png(png)
    assert img.shape[1] > 1.6 * img.shape[0]  # exact match and first label side by side


def test_plot_run_without_config_or_results(tmp_path):
    run = make_run(tmp_path, "bare", config=False)
    assert len(plot_run(run)) == 2
    with pytest.raises(DataError, match="no evaluation results"):
        plot_run(tmp_path / "empty")


def test_plot_compare_two_runs(tmp_path):
    runs = [make_run(tmp_path, "a", train=3), make_run(tmp_path, "b", train=6, size=12)]
    paths = plot_compare(runs, tmp_path / "cmp" / "compare")
    assert [p.name for p in paths] == ["compare.png", "compare.pdf"]
    read_png(paths[0])


def run_script(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "plot_grid.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_plot_grid_script(tmp_path):
    runs = [make_run(tmp_path, "a", size=4), make_run(tmp_path, "b", size=4)]
    res = run_script(*runs, "--out", tmp_path / "figs")
    assert res.returncode == 0, res.stderr
    printed = res.stdout.split()
    assert str(tmp_path / "figs" / "compare.png") in printed and len(printed) == 6
    assert all(Path(p).is_file() for p in printed)

    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_script(empty)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1


def test_annotations_round_not_truncate():
    """0.58 * 100 is 57.99999999999999 in floating point: the label must read 58."""
    from matplotlib.figure import Figure

    from arith.plots import heatmap

    rows = [{"task": "addition", "a_len": 1, "b_len": 1, "n": 50, "correct": 29, "acc": 29 / 50}]
    ax = Figure().subplots()
    heatmap(ax, rows)
    assert [t.get_text() for t in ax.texts] == ["58"]


def test_a_long_settings_title_wraps_inside_the_figure():
    """Every setting of a voted grid does not fit one line of a small figure: the title wraps at ' · ', each line
    within the width, nothing lost."""
    from arith.plots.grid import _wrapped

    text = " · ".join(f"setting_{i}=value_{i}" for i in range(12))
    lines = _wrapped(text, 60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert " · ".join(lines) == text
    assert _wrapped("", 60) == [] and _wrapped("one_item_longer_than_the_width", 10) == [
        "one_item_longer_than_the_width"
    ]


def test_heatmaps_are_split_and_titled_by_the_settings_columns(tmp_path):
    """Columns beyond the base ones that are not results (the checkpoint step, k) name what a grid was made
    with: one figure per distinct setting, the settings in its title."""
    from arith.plots import grid_figures, settings_columns

    run = tmp_path / "r"
    for step, k in [(100, 5), (200, 5)]:
        out = GridCSV(run / "eval" / f"addition_step{step}.csv", extra_columns=("step", "offset"))
        for cell in grid_cells([step // 100, step // 100 + 1]):
            out.append("addition", cell, n=10, correct=step // 20, step=step, offset=k)
    (run / "config.yaml").write_text(CONFIG.format(name="r", task="addition", n=2, m="null"))
    rows = read_results(run)
    assert settings_columns(rows) == ["step", "offset"]
    figures = grid_figures(run)
    assert [(f.stem, f.settings) for f in figures] == [
        ("heatmap_addition_0", {"step": 100, "offset": 5}),
        ("heatmap_addition_1", {"step": 200, "offset": 5}),
    ]
    assert "step=200 · offset=5" in figures[1].figure.get_suptitle()
    assert {r["step"] for r in figures[1].rows} == {200} and len(figures[1].rows) == 4
    assert sorted(p.name for p in plot_run(run, tmp_path / "figs", formats=("png",))) == [
        "heatmap_addition_0.png",
        "heatmap_addition_1.png",
    ]
