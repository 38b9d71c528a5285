"""The untrained-rows warning (arith/eval/reach.py): it fires at the first length whose positions + offset pass
the highest row training reached, and not below."""

import numpy as np
import pytest

from arith.data.tokenizer import ArithTokenizer
from arith.eval.grid import Cell
from arith.eval.reach import cell_needs, longest_runs, training_needs, untrained_rows

TOK = ArithTokenizer.build()


def run_cfg(compose, *overrides):
    return compose(["data.streaming=true", *overrides])


def longest_digit_run(ids, tok):  # the loop version, formerly runs.longest_digit_run
    best, run = 0, np.zeros(ids.shape[0], dtype=np.int64)
    for col in range(ids.shape[1]):
        run = np.where(tok.is_digit(ids)[:, col], run + 1, 0)
        best = max(best, int(run.max()))
    return best


def test_longest_runs_equals_the_loop_version():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, TOK.vocab_size, size=(40, 30))
    fast = longest_runs(TOK.is_digit(ids))
    assert [int(x) for x in fast] == [longest_digit_run(row[None], TOK) for row in ids]


def test_cell_needs_of_addition():
    needs = cell_needs("addition", TOK, [Cell(1, 1), Cell(8, 8), Cell(3, 12)])
    assert needs[Cell(8, 8)] == (8 + 1 + 8 + 1 + 9 + 1, 9)  # a carry out of the top digit: 9 answer digits
    assert needs[Cell(3, 12)][1] == 12  # what sampled problems read: a carry through nine 9s is rare
    assert needs[Cell(1, 1)] == (7, 2)  # "9+9=81" + EOS


def test_abacus_warning_fires_at_the_right_length(compose):
    cfg = run_cfg(compose, "model.abs_pos=abacus", "model.max_k=3", "data.max_len=1")
    assert training_needs(cfg, TOK)[1] == 2  # 9+9=18: rows up to max_k 3 + 2 = 5 are trained
    assert untrained_rows(cfg, TOK, [Cell(4, 4)], k=0) is None  # 5 answer digits: row 5
    message = untrained_rows(cfg, TOK, [Cell(5, 5)], k=0)
    assert "abacus position row 6" in message and "rows up to 5" in message
    assert "(5, 5 digits)" in message and "model.max_k >= 4 would cover them" in message
    assert "\n" not in message
    # an offset moves the boundary down by as much: k=2 reads row 6 at 3 digits, not at 2
    assert untrained_rows(cfg, TOK, [Cell(2, 2)], k=2) is None
    assert "row 6" in untrained_rows(cfg, TOK, [Cell(3, 3)], k=2)
    grid = [Cell(a, b) for a in range(1, 7) for b in range(1, 7)]
    message = untrained_rows(cfg, TOK, grid, k=0)
    assert (
        "rows 6..7" in message and "of 36 cells, the shortest (" in message and "model.max_k >= 5" in message
    )
    assert untrained_rows(cfg, TOK, [Cell(a, b) for a in range(1, 5) for b in range(1, 5)], k=0) is None


def test_learned_warning_names_the_sequence_length(compose):
    cfg = run_cfg(compose, "model.abs_pos=learned", "data.max_len=3")
    assert training_needs(cfg, TOK)[0] == 3 + 1 + 3 + 1 + 4 + 1  # 13 tokens: rows 0..12
    assert untrained_rows(cfg, TOK, [Cell(3, 3)], k=7) is None  # the offset does not move learned rows
    message = untrained_rows(cfg, TOK, [Cell(3, 4)], k=0)
    assert "learned position rows 13..14" in message and "training sequences reach 13 tokens" in message
    assert "offset" not in message and "max_k" not in message


@pytest.mark.parametrize("abs_pos, rel_pos", [("none", "rope"), ("none", "fire"), ("none", "none")])
def test_no_table_no_warning(compose, abs_pos, rel_pos):
    cfg = run_cfg(compose, f"model.abs_pos={abs_pos}", f"model.rel_pos={rel_pos}", "data.max_len=1")
    assert untrained_rows(cfg, TOK, [Cell(30, 30)], k=0) is None


def test_the_staircase_walk_equals_checking_every_cell():
    from arith.eval.reach import _maximal, _up_set

    rng = np.random.default_rng(1)
    grid = [Cell(a, b) for a in range(1, 21) for b in range(1, 21)]
    probed = []

    def above(c):
        probed.append(c)
        return c.a_len + 2 * c.b_len > 31  # monotone in both lengths

    for cells in (
        grid,
        [grid[i] for i in sorted(rng.choice(len(grid), 57, replace=False))],
        [Cell(n, n) for n in range(5, 15)],
    ):
        probed.clear()
        assert _up_set(cells, above) == [c for c in cells if c.a_len + 2 * c.b_len > 31]
        assert len(probed) <= 2 * 21
    assert _maximal([Cell(3, 9), Cell(5, 5), Cell(5, 2), Cell(9, 1), Cell(2, 9)]) == [
        Cell(9, 1),
        Cell(5, 5),
        Cell(3, 9),
    ]
