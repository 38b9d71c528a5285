"""Evaluation grids as data: cells, cost-balanced shards, resumable atomic CSVs, merged results."""

import csv
import os
import threading

import pytest

from arith.errors import ConfigError, DataError
from arith.eval.grid import Cell, GridCSV, cell_cost, csv_path, grid_cells, read_results, shard_cells


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
