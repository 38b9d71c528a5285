"""Evaluation grids as data: cells, cost-balanced shards, resumable atomic CSVs, merged results."""

import csv
import dataclasses
import os
import threading

import pytest
import torch

from arith.data.tasks import get_task
from arith.errors import ConfigError, DataError
from arith.eval.grid import (
    SETTINGS_COLUMNS,
    Cell,
    GridCSV,
    csv_path,
    grid_cells,
    read_results,
    shard_cells,
)
from arith.eval.settings import EvalSettings, default_settings


def cell_cost(cell, task):  # the cost model moved to the task (TaskSpec.cell_cost)
    return get_task(task).cell_cost(cell.a_len, cell.b_len)


def test_grid_cells_ranges():
    cells = grid_cells([1, 3], [2, 3])
    assert cells == [Cell(a, b) for a in (1, 2, 3) for b in (2, 3)]
    assert grid_cells((2, 3)) == [Cell(2, 2), Cell(2, 3), Cell(3, 2), Cell(3, 3)]
    assert len(grid_cells([1, 100])) == 10_000


def test_grid_cells_square_ignores_ranges():
    assert grid_cells([1, 100], square=[101, 104]) == [Cell(n, n) for n in range(101, 105)]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"a_lens": [0, 5]}, "eval.a_lens"),
        ({"a_lens": [5, 4]}, "eval.a_lens"),
        ({"a_lens": [1, 2, 3]}, "eval.a_lens"),
        ({"a_lens": 5}, "eval.a_lens"),
        ({"a_lens": [1.0, 5]}, "eval.a_lens"),
        ({"a_lens": [1, 5], "b_lens": [3]}, "eval.b_lens"),
        ({"a_lens": [1, 5], "square": [10, 9]}, "eval.square"),
    ],
)
def test_grid_cells_errors_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        grid_cells(**kwargs)


def test_cell_cost_grows_with_length():
    for task in ("addition", "subtraction", "multiplication", "bitwise_or", "sorting"):
        assert cell_cost(Cell(2, 2), task) < cell_cost(Cell(2, 3), task) < cell_cost(Cell(3, 3), task)
    assert cell_cost(Cell(10, 10), "multiplication") > cell_cost(Cell(10, 10), "addition")
    with pytest.raises(ConfigError, match="unknown task"):
        cell_cost(Cell(1, 1), "division")


@pytest.mark.parametrize("task", ["addition", "sorting"])
@pytest.mark.parametrize("num_shards", [1, 2, 3, 7, 20])
def test_shards_partition_and_balance(task, num_shards):
    cells = grid_cells([1, 30])
    shards = [shard_cells(cells, num_shards, s, task) for s in range(num_shards)]
    flat = [c for s in shards for c in s]
    assert len(flat) == len(cells) and set(flat) == set(cells)  # union is the grid, no overlap
    for s in shards:  # each shard keeps grid order
        assert s == sorted(s, key=cells.index)
    loads = [sum(cell_cost(c, task) for c in s) for s in shards]
    mean = sum(loads) / num_shards
    assert max(loads) <= 1.05 * mean
    assert shard_cells(cells, num_shards, 0, task) == shards[0]  # deterministic


def test_shard_errors():
    cells = grid_cells([1, 4])
    for num_shards, shard in [(4, 4), (4, -1), (0, 0)]:
        with pytest.raises(ConfigError, match=r"eval\.(shard|num_shards)"):
            shard_cells(cells, num_shards, shard, "addition")


def test_csv_path_names_grid_and_shard(tmp_path):
    p = csv_path(tmp_path, "addition", a_lens=[1, 100], num_shards=20, shard=3)
    assert p == tmp_path / "eval" / "addition_a1-100_b1-100_s03of20.csv"
    assert csv_path(tmp_path, "addition", square=[101, 160]).name == "addition_sq101-160_s0of1.csv"


def test_gridcsv_append_done_resume(tmp_path):
    path = tmp_path / "eval" / "addition_x.csv"
    out = GridCSV(path)
    assert out.done() == set()
    out.append("addition", Cell(1, 2), n=100, correct=97)
    out.append("addition", Cell(2, 2), n=50, correct=50)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["task", "a_len", "b_len", "n", "correct", "acc"]
    assert [float(r["acc"]) for r in rows] == [0.97, 1.0]
    # a resumed job sees the finished cells and keeps appending
    again = GridCSV(path)
    assert again.done() == {(1, 2), (2, 2)}
    again.append("addition", Cell(1, 2), n=100, correct=99)  # a redone cell replaces its row
    assert again.done() == {(1, 2), (2, 2)}
    assert [r["acc"] for r in read_results(tmp_path)] == [0.99, 1.0]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_gridcsv_extra_columns_and_validation(tmp_path):
    out = GridCSV(tmp_path / "eval" / "sorting.csv", extra_columns=("first_correct", "first_acc"))
    out.append("sorting", Cell(3, 4), n=10, correct=4, first_correct=9)  # first_acc filled in
    (row,) = read_results(tmp_path)
    assert row["first_correct"] == 9 and row["first_acc"] == 0.9 and row["acc"] == 0.4
    with pytest.raises(ValueError, match="unknown"):
        out.append("sorting", Cell(1, 1), n=10, correct=4, first_correct=1, bogus=3)
    with pytest.raises(ValueError):
        out.append("sorting", Cell(1, 1), n=10, correct=11, first_correct=1)
    with pytest.raises(DataError, match="header"):
        GridCSV(tmp_path / "eval" / "sorting.csv").done()  # opened with the wrong columns


def test_gridcsv_always_parseable_while_writing(tmp_path):
    """A reader racing the writer only ever sees whole files (the rename is atomic)."""
    path = tmp_path / "eval" / "addition.csv"
    out = GridCSV(path)
    out.append("addition", Cell(1, 1), n=10, correct=10)
    stop, seen, errors = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
                assert all(len(r) == 6 and None not in r.values() and r["acc"] for r in rows)
                seen.append(len(rows))
            except Exception as e:
                errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for cell in grid_cells([1, 8]):
        out.append("addition", cell, n=10, correct=cell.a_len % 11)
    stop.set()
    t.join()
    assert not errors and seen and seen == sorted(seen)
    assert len(read_results(tmp_path)) == 64


def test_read_results_union_and_dedup(tmp_path):
    a = GridCSV(tmp_path / "eval" / "addition_s0.csv")
    b = GridCSV(tmp_path / "eval" / "addition_s1.csv")
    a.append("addition", Cell(1, 1), n=10, correct=1)
    a.append("addition", Cell(1, 2), n=10, correct=2)
    b.append("addition", Cell(2, 2), n=10, correct=3)
    b.append("addition", Cell(1, 1), n=10, correct=9)  # written last: wins
    os.utime(b.path, ns=(a.path.stat().st_mtime_ns + 10**9,) * 2)
    rows = read_results(tmp_path)
    assert [(r["a_len"], r["b_len"], r["correct"]) for r in rows] == [(1, 1, 9), (1, 2, 2), (2, 2, 3)]
    assert read_results(tmp_path / "nothing") == []


# ------------------------------------------------------------------------------------------- settings
def settings(k=0, checkpoint="10", **kw) -> EvalSettings:
    return EvalSettings(checkpoint=checkpoint, weights="raw", k=k, recurrences=1, **kw)


def test_csv_path_ends_in_the_settings_tag(tmp_path):
    s = settings(k=5, vote_ks=(0, 3, 5), vote_mode="logits", attn_scale=1.5, attn_scale_mode="log")
    assert s.tag() == "step10_raw_k5_r1_vote0-3-5-logits_attn1.5-log"
    assert settings(attn_scale=2.0, attn_scale_where="first").tag() == "step10_raw_k0_r1_attn2-first"
    p = csv_path(tmp_path, "addition", a_lens=[1, 4], tag=settings().tag())
    assert p.name == "addition_a1-4_b1-4_s0of1_step10_raw_k0_r1.csv"


def test_gridcsv_records_settings_and_resumes_only_its_own(tmp_path):
    path = tmp_path / "eval" / "addition.csv"
    a = GridCSV(path, settings=settings(k=0).columns())
    a.append("addition", Cell(1, 1), n=10, correct=7)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["task", "a_len", "b_len", "n", "correct", "acc", *SETTINGS_COLUMNS]
    assert GridCSV(path, settings=settings(k=0).columns()).done() == {(1, 1)}
    assert GridCSV(path, settings=settings(k=3).columns()).done() == set()  # other settings: nothing is done
    (row,) = read_results(tmp_path)
    assert row["k"] == 0 and row["checkpoint"] == 10 and row["weights"] == "raw" and row["vote_ks"] is None
    assert row["attn_scale"] == 1.0 and row["attn_scale_mode"] == "const"


def test_a_grid_written_before_a_later_settings_column_resumes(tmp_path):
    path = tmp_path / "eval" / "sorting.csv"
    GridCSV(path, settings=settings(k=5).columns()).append("sorting", Cell(1, 1), n=10, correct=7)
    lines = [line.split(",") for line in path.read_text().splitlines()]
    drop = {
        lines[0].index(c) for c in ("order_votes", "label_permutation", "order_view_items")
    }  # as before them
    path.write_text(
        "\n".join(",".join(c for i, c in enumerate(line) if i not in drop) for line in lines) + "\n"
    )
    table = GridCSV(path, settings=settings(k=5).columns())
    assert table.done() == {(1, 1)}  # its rows read as made without an order vote or a label permutation
    views = settings(k=5, order_votes=3, order_view_items=3).columns()
    assert GridCSV(path, settings=views).done() == set()
    assert GridCSV(path, settings=settings(k=5, order_votes=9).columns()).done() == set()
    assert GridCSV(path, settings=settings(k=5, label_permutation=True).columns()).done() == set()
    table.append("sorting", Cell(1, 2), n=10, correct=3)
    header = path.read_text().splitlines()[0].split(",")
    assert header[-3:] == [
        "order_votes",
        "label_permutation",
        "order_view_items",
    ]  # rewritten with the columns
    got = [
        (r["b_len"], r["order_votes"], r["label_permutation"], r["order_view_items"])
        for r in read_results(tmp_path)
    ]
    assert got == [(1, None, None, None), (2, None, None, None)]
    lines = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(line[:-4]) for line in lines) + "\n")  # row_window gone too: not ours
    with pytest.raises(DataError, match="header"):
        GridCSV(path, settings=settings(k=5).columns()).done()


def write(folder, name, s, cells, correct, mtime):
    table = GridCSV(folder / name, settings=None if s is None else s.columns())
    for c in cells:
        table.append("addition", c, n=10, correct=correct)
    os.utime(table.path, ns=(mtime, mtime))


def test_read_results_keeps_settings_apart(tmp_path):
    folder, cells = tmp_path / "eval", [Cell(1, 1), Cell(1, 2)]
    t = 10**18
    write(folder, "old.csv", None, cells, 1, t)  # written before settings were recorded
    write(folder, "k0.csv", settings(k=0), cells, 2, t + 10**9)
    write(folder, "vote.csv", settings(k=0, vote_ks=(0, 3), vote_mode="answer"), cells, 3, t + 2 * 10**9)
    write(
        folder,
        "vote_more.csv",
        settings(k=0, vote_ks=(0, 3), vote_mode="answer"),
        [Cell(2, 2)],
        4,
        t + 3 * 10**9,
    )
    assert len(read_results(tmp_path, settings="all")) == 7  # one row per cell and settings
    newest = read_results(tmp_path)  # no run here: the group written last, all its files merged
    assert [(r["a_len"], r["b_len"], r["correct"]) for r in newest] == [(1, 1, 3), (1, 2, 3), (2, 2, 4)]
    assert all(r["vote_ks"] == "0 3" for r in newest)
    assert [r["correct"] for r in read_results(tmp_path, settings={"vote_ks": None, "k": 0})] == [2, 2]
    assert [r["correct"] for r in read_results(tmp_path, settings={"checkpoint": None})] == [
        1,
        1,
    ]  # the old file
    assert len(read_results(tmp_path, settings={"vote_ks": [0, 3]})) == 3
    with pytest.raises(ConfigError, match="valid: checkpoint"):
        read_results(tmp_path, settings={"offset": 3})


def test_old_csvs_alone_read_as_before(tmp_path):
    write(tmp_path / "eval", "a.csv", None, [Cell(1, 1), Cell(2, 1)], 5, 10**18)
    rows = read_results(tmp_path)
    assert [(r["a_len"], r["acc"]) for r in rows] == [(1, 0.5), (2, 0.5)]
    assert list(rows[0]) == ["task", "a_len", "b_len", "n", "correct", "acc"]


def test_read_results_defaults_to_the_settings_a_plain_load_uses(tmp_path, compose):
    from omegaconf import OmegaConf

    run = tmp_path / "run"
    cfg = compose(["model.eval_k=2", "model.recurrences=3", "model.eval_recurrences=4"])
    run.mkdir()
    OmegaConf.save(cfg, run / "config.yaml")
    for step in ("10", "20"):
        (run / "checkpoints" / step).mkdir(parents=True)
        # a checkpoint must look intact (weights header, model config) to be chosen (arith.checkpoint.problem)
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(1)}, str(run / "checkpoints" / step / "model.safetensors"))
        (run / "checkpoints" / step / "model_config.json").write_text("{}")
    (run / "checkpoints" / "latest").write_text("20")
    (run / "checkpoints" / "best").write_text("10")
    default = default_settings(run)
    assert (default.checkpoint, default.weights, default.k, default.recurrences) == ("10", "raw", 2, 4)
    save_file({"w": torch.zeros(1)}, str(run / "checkpoints" / "10" / "ema.safetensors"))
    assert default_settings(run).weights == "ema"
    t = 10**18
    write(run / "eval", "best.csv", default_settings(run), [Cell(1, 1)], 6, t)
    later = dataclasses.replace(default_settings(run), checkpoint="20")
    write(run / "eval", "latest.csv", later, [Cell(1, 1)], 9, t + 10**9)
    assert [r["correct"] for r in read_results(run)] == [6]  # the default (best) checkpoint, though older
    (run / "checkpoints" / "best").unlink()
    assert [r["correct"] for r in read_results(run)] == [9]  # now latest is the default
    assert default_settings(tmp_path / "nothing") is None
