"""Which position rows an evaluation reads that training never reached (issue 12, item 7).

Training with Abacus (or coupling) offsets k ~ U{0..max_k} reaches rows up to max_k + the longest digit run of
a training example; a learned table reaches row (longest training sequence - 1). Rows above keep their initial
values, so evaluating there measures an untrained embedding, not length generalization. `untrained_rows`
names them, the lengths that read them and the `model.max_k` that would cover them; the grid prints it once,
`solve` and the Python API raise it once as an `UntrainedPositionsWarning`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arith.data.spec import Cell
from arith.data.tasks import eval_cell, get_task, task_for, train_lengths
from arith.files import longest_labeled
from arith.model.positions import ABS_POS, check_positions, position_rows

PROBES = 32  # problems per cell: P(none of them carries into the top digit) ~ 0.55^32
_CHUNK_TOKENS = 4_000_000


class UntrainedPositionsWarning(UserWarning):
    """An evaluation reads position rows that training never reached."""


def longest_runs(is_digit: np.ndarray) -> np.ndarray:
    """(N, T) bool -> (N,) longest run of consecutive True per row."""
    count = is_digit.cumsum(axis=1)
    base = np.maximum.accumulate(np.where(is_digit, 0, count), axis=1)  # digits before the current run
    return ((count - base) * is_digit).max(axis=1, initial=0)


def cell_needs(task: str, tok, cells: Sequence[Cell], n: int = PROBES) -> dict[Cell, tuple[int, int]]:
    """{cell: (longest sequence in tokens, longest digit run)} from n sampled problems per cell (fixed seed);
    task: a name or a `TaskSpec`."""
    spec = get_task(task)
    cells = list(cells)
    out: dict[Cell, tuple[int, int]] = {}
    rng = np.random.default_rng(0)
    # a chunk of cells sampled at once: ~ (cells x n) rows of ~3 x max length tokens
    per_chunk = max(1, _CHUNK_TOKENS // (n * 3 * max((max(c.a_len, c.b_len) for c in cells), default=1) + 1))
    for start in range(0, len(cells), per_chunk):
        chunk = cells[start : start + per_chunk]
        a = np.repeat([c.a_len for c in chunk], n)
        b = np.repeat([c.b_len for c in chunk], n)
        # plain sampling, no train / eval split: its lengths are those of any problem of the cell
        ids, _, length = spec._tokens(tok, spec._sample(rng, a, b, int(a.max()), int(b.max())), np.int64)
        digits = longest_runs(tok.is_digit(ids)).reshape(len(chunk), n).max(axis=1)
        tokens = length.reshape(len(chunk), n).max(axis=1)
        out.update({c: (int(t), int(d)) for c, t, d in zip(chunk, tokens, digits)})
    return out


def position_needs(cfg, tok, a_len=None, b_len=None, training=True, k=None) -> tuple[int, int]:
    """Longest sequence and digit run of 8 held-out problems of the (a_len, b_len) cell (default: training's);
    raises ConfigError when the position schemes cannot hold them."""
    d = cfg.data
    max_a, max_b = train_lengths(d)
    probe = eval_cell(task_for(d), tok, a_len or max_a, b_len or max_b, 8, 0)
    max_tokens, max_digits = int(probe.length.max()), int(longest_runs(tok.is_digit(probe.ids)).max())
    check_positions(cfg.model, max_tokens=max_tokens, max_digits=max_digits, training=training, k=k)
    return max_tokens, max_digits


def training_needs(cfg, tok) -> tuple[int, int]:
    """(longest training sequence in tokens, longest training digit run): the (max_len, max_len_b) cell."""
    d = cfg.data
    cell = Cell(*train_lengths(d))
    return cell_needs(task_for(d), tok, [cell])[cell]  # the training format (padded operands too)


def _up_set(cells: list[Cell], above) -> list[Cell]:
    """The cells for which `above(cell)` holds, for a predicate that is monotone in both lengths (a longer
    operand never needs fewer rows): a staircase walk over the cells' bounding box, with about
    (rows + columns) probes instead of one per cell (a 100x100 grid: ~200, not 10,000)."""
    b_lo, b_hi = min(c.b_len for c in cells), max(c.b_len for c in cells)
    first_b, b = {}, b_hi + 1  # a -> the smallest b above; it can only fall as a grows
    for a in sorted({c.a_len for c in cells}):
        while b - 1 >= b_lo and above(Cell(a, b - 1)):
            b -= 1
        first_b[a] = b
    return [c for c in cells if c.b_len >= first_b[c.a_len]]


def _maximal(cells: list[Cell]) -> list[Cell]:
    """The cells no other cell dominates (both lengths >=): where the most rows are read."""
    out, best_b = [], 0
    for c in sorted(cells, key=lambda c: (-c.a_len, -c.b_len)):
        if c.b_len > best_b:
            out.append(c)
            best_b = c.b_len
    return out


def untrained_rows(cfg, tok, cells: Sequence[Cell], k: int, task=None, run_dir=None) -> str | None:
    """A one-line warning when evaluating `cells` at offset k (the largest offset used) reads rows above the
    highest one training reached, else None. cfg: the run's PretrainConfig; task: the task evaluated; run_dir:
    the run's folder, whose self-improvement labels (if any) count as training numbers too."""
    train_tokens, train_digits = training_needs(cfg, tok)
    # a self-improved child: the numbers of its labels trained rows too (at offsets 0..max_k)
    labeled = longest_labeled(run_dir) if run_dir is not None else 0
    from_labels = labeled >= train_digits  # the labels set (or tie) the longest number
    train_digits = max(train_digits, labeled)
    reach = position_rows(cfg.model, train_tokens, train_digits, cfg.model.max_k)
    if reach is None or not cells:
        return None
    table, by_offset = str(cfg.model.abs_pos), ABS_POS[cfg.model.abs_pos].takes_offset
    task = task or task_for(cfg.data)
    cells = sorted(set(cells))

    def row(cell: Cell) -> int:
        t, dg = cell_needs(task, tok, [cell])[cell]
        return position_rows(cfg.model, t, dg, k)

    over = _up_set(cells, lambda c: row(c) > reach)
    if not over:
        return None
    top = max(row(c) for c in _maximal(over))
    first = min(over, key=lambda c: (max(c.a_len, c.b_len), c.a_len + c.b_len, c.a_len))
    where = (
        f"the problem ({first.a_len}, {first.b_len} digits)"
        if len(cells) == 1
        else f"{len(over)} of {len(cells)} cells, the shortest ({first.a_len}, {first.b_len})"
    )
    if by_offset:
        labels = " (self-improvement labels included)" if from_labels else ""
        why = f"model.max_k {cfg.model.max_k} + {train_digits}, the longest training number{labels}"
        fix = f"model.max_k >= {top - train_digits} would cover them"
    else:
        why = f"training sequences reach {train_tokens} tokens"
        fix = f"training on sequences of {top + 1} tokens would cover them"
    rows = f"row {top}" if top == reach + 1 else f"rows {reach + 1}..{top}"
    at = f" at offset k={k}" if by_offset else ""
    return (
        f"evaluation reads {table} position {rows}, which training never reached (rows up to {reach}: {why}),"
        f"{at} in {where}; {fix}"
    )
