"""Evaluation grids as data: cells, shards balanced by the task's decoding cost, and resumable CSV files.

A grid is a list of ``Cell(a_len, b_len)``; for sorting ``a_len`` is the maximum number of digits and ``b_len``
the array length. Each shard writes one tidy CSV (``task,a_len,b_len,n,correct,acc`` plus optional extra
columns, then the evaluation settings ``SETTINGS_COLUMNS``: checkpoint, weights, offset, depth, vote, attention
temperature, see ``arith/eval/settings.py``) under ``<run_dir>/eval/``, its name ending in the settings' tag.
``read_results`` takes the union of every CSV there per settings, so shards, resumed jobs and the square sizes
beyond the main grid merge into one table while rows of different settings never do.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from arith.data.spec import Cell
from arith.data.tasks import get_task
from arith.errors import ConfigError, DataError
from arith.eval.settings import SETTINGS_COLUMNS, default_settings
from arith.files import atomic_write_text

BASE_COLUMNS = ("task", "a_len", "b_len", "n", "correct", "acc")
_INT_COLUMNS = ("a_len", "b_len", "n", "correct")
# settings columns added after grids were first written: a file without them resumes, reading them as empty (off)
ADDED_LATER = ("order_votes", "label_permutation", "order_view_items")


# ----------------------------------------------------------------------------------------------------------------
# cells


def _range(value, key: str) -> tuple[int, int]:
    """Validate an inclusive ``[lo, hi]`` length range coming from the config (a list, tuple or ListConfig)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{key} must be a list [lo, hi] of two lengths, got {value!r}")
    items = list(value)
    if len(items) != 2:
        raise ConfigError(f"{key} must be a list [lo, hi] of two lengths, got {items!r} ({len(items)} items)")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        raise ConfigError(f"{key} must hold integers, got {items!r}")
    lo, hi = items
    if lo < 1:
        raise ConfigError(f"{key}: lengths start at 1, got lo={lo}")
    if lo > hi:
        raise ConfigError(f"{key}: lo must be <= hi, got [{lo}, {hi}]")
    return lo, hi


def grid_cells(
    a_lens: Sequence[int],
    b_lens: Sequence[int] | None = None,
    square: Sequence[int] | None = None,
) -> list[Cell]:
    """Cells of an evaluation grid, row-major (a_len outer).

    ``a_lens`` and ``b_lens`` are inclusive ``[lo, hi]`` ranges (``b_lens=None`` means the same as ``a_lens``).
    ``square=[lo, hi]`` selects only the diagonal cells ``(n, n)`` for ``n`` in ``lo..hi`` and ignores the
    other two (the paper's sizes 101-160 beyond the 100x100 addition grid).
    """
    if square is not None:
        lo, hi = _range(square, "eval.square")
        return [Cell(n, n) for n in range(lo, hi + 1)]
    a_lo, a_hi = _range(a_lens, "eval.a_lens")
    b_lo, b_hi = (a_lo, a_hi) if b_lens is None else _range(b_lens, "eval.b_lens")
    return [Cell(a, b) for a in range(a_lo, a_hi + 1) for b in range(b_lo, b_hi + 1)]


# ----------------------------------------------------------------------------------------------------------------
# cost model and shards


def shard_cells(cells: Sequence[Cell], num_shards: int, shard: int, task) -> list[Cell]:
    """This shard's cells, balanced by the task's ``cell_cost`` with greedy longest-processing-time assignment.

    Cells are taken in order of decreasing cost (ties: by position in ``cells``) and each goes to the least
    loaded shard (ties: the lowest shard index), so every process computes the same split without talking to
    the others. The returned cells keep their order in ``cells``; the shards union to ``cells`` exactly.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConfigError(f"eval.num_shards must be an integer >= 1, got {num_shards!r}")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ConfigError(
            f"eval.shard must be in 0..{num_shards - 1} (eval.num_shards={num_shards}), got {shard!r}"
        )
    spec = get_task(task)
    costs = [spec.cell_cost(c.a_len, c.b_len) for c in cells]
    order = sorted(range(len(cells)), key=lambda i: (-costs[i], i))
    load = [0.0] * num_shards
    owner = [0] * len(cells)
    for i in order:
        s = min(range(num_shards), key=lambda k: (load[k], k))
        owner[i] = s
        load[s] += costs[i]
    return [c for i, c in enumerate(cells) if owner[i] == shard]


# ----------------------------------------------------------------------------------------------------------------
# CSV files


def csv_path(
    run_dir: str | os.PathLike,
    task: str,
    *,
    a_lens: Sequence[int] | None = None,
    b_lens: Sequence[int] | None = None,
    square: Sequence[int] | None = None,
    num_shards: int = 1,
    shard: int = 0,
    out: str = "eval",
    tag: str = "",
) -> Path:
    """``<run_dir>/<out>/<task>_<grid>_<shard>[_<tag>].csv``, e.g. ``addition_a1-100_b1-100_s03of20.csv``.

    The grid is part of the name so the square sizes beyond the main grid, or a re-run with another shard
    count, land in their own files instead of clobbering (or resuming from) the wrong one; ``tag`` (the
    evaluation settings, ``EvalSettings.tag``) does the same for another checkpoint, offset, vote or scale.
    """
    if square is not None:
        lo, hi = _range(square, "eval.square")
        grid = f"sq{lo}-{hi}"
    elif a_lens is not None:
        a_lo, a_hi = _range(a_lens, "eval.a_lens")
        b_lo, b_hi = (a_lo, a_hi) if b_lens is None else _range(b_lens, "eval.b_lens")
        grid = f"a{a_lo}-{a_hi}_b{b_lo}-{b_hi}"
    else:
        grid = "grid"
    width = len(str(max(num_shards - 1, 0)))
    suffix = f"_{tag}" if tag else ""
    return Path(run_dir) / out / f"{task}_{grid}_s{shard:0{width}d}of{num_shards}{suffix}.csv"


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def _parse(value: str):
    """CSV text -> int, float, None (empty) or the string itself."""
    if value == "":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


class GridCSV:
    """One shard's results: a CSV that grows by one row per finished cell and survives being killed.

    Every ``append`` writes the whole file to a temporary file in the same folder and renames it over the old
    one (``os.replace`` is atomic on POSIX), so a reader or a resumed job never sees half a row. ``settings``
    (``{column: text}`` for every ``SETTINGS_COLUMNS``) is written into every row, and ``done`` only counts
    the rows made with the same settings.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        extra_columns: tuple[str, ...] = (),
        settings: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.extra_columns = tuple(extra_columns)
        self.settings = None if settings is None else {c: str(settings[c]) for c in SETTINGS_COLUMNS}
        self.columns = BASE_COLUMNS + self.extra_columns + (SETTINGS_COLUMNS if settings is not None else ())
        clash = set(BASE_COLUMNS + SETTINGS_COLUMNS) & set(self.extra_columns)
        if clash or len(set(self.extra_columns)) != len(self.extra_columns):
            raise ValueError(
                f"extra_columns must be distinct and not among {BASE_COLUMNS}: {self.extra_columns}"
            )
        self._rows: list[dict[str, str]] | None = None
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file as we last read or wrote it

    def _load(self) -> list[dict[str, str]]:
        """Rows as strings; cached, re-read only when the file changed behind our back."""
        if not self.path.exists():
            self._rows, self._stamp = [], None
            return self._rows
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._rows is not None and stamp == self._stamp:
            return self._rows
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            header = tuple(reader.fieldnames or ())
            late = tuple(c for c in self.columns if c not in header)
            if header != tuple(c for c in self.columns if c in header) or not set(late) <= set(ADDED_LATER):
                raise DataError(
                    f"{self.path}: header {','.join(header)!r} does not match the expected "
                    f"{','.join(self.columns)!r}; move the file away or evaluate into another folder"
                )
            self._rows = [dict(r) | dict.fromkeys(late, "") for r in reader]  # a later column: empty = off
        self._stamp = stamp
        return self._rows

    def done(self) -> set[tuple[int, int]]:
        """``(a_len, b_len)`` of every cell already in the file (with these settings), so a resumed job can
        skip them."""
        mine = self.settings or {}
        return {
            (int(r["a_len"]), int(r["b_len"]))
            for r in self._load()
            if all(r.get(c) == v for c, v in mine.items())
        }

    def append(self, task: str, cell: Cell, n: int, correct: int, **extra) -> None:
        """Add the row for ``cell`` (replacing an earlier row for the same task and cell).

        ``acc = correct / n``. Extra columns are passed by name; an extra column ``X_acc`` that is not given
        is filled in as ``X_correct / n`` when ``X_correct`` is (sorting's ``first_correct, first_acc``).
        """
        if n < 1 or not 0 <= correct <= n:
            raise ValueError(f"need n >= 1 and 0 <= correct <= n, got n={n}, correct={correct}")
        for col in self.extra_columns:
            stem = col.removesuffix("_acc")
            if col not in extra and col != stem and f"{stem}_correct" in extra:
                extra[col] = extra[f"{stem}_correct"] / n
        unknown = set(extra) - set(self.extra_columns)
        missing = set(self.extra_columns) - set(extra)
        if unknown or missing:
            raise ValueError(f"extra columns: unknown {sorted(unknown)}, missing {sorted(missing)}")
        values = {"task": task, "a_len": cell.a_len, "b_len": cell.b_len, "n": n, "correct": correct}
        values["acc"] = correct / n
        values.update(extra)
        values.update(self.settings or {})
        row = {k: _format(values[k]) for k in self.columns}

        key = (task, str(cell.a_len), str(cell.b_len))
        rows = [r for r in self._load() if (r["task"], r["a_len"], r["b_len"]) != key] + [row]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

        atomic_write_text(self.path, buf.getvalue())
        st = self.path.stat()
        self._rows, self._stamp = rows, (st.st_mtime_ns, st.st_size)


def _setting(column: str, value):
    """A settings value in one comparable form: None (empty), a tuple of offsets, a number or the text."""
    if value is None or value == "":
        return None
    if column == "vote_ks":
        items = value.split() if isinstance(value, str) else list(value)
        return tuple(int(x) for x in items) or None
    return _parse(value) if isinstance(value, str) else getattr(value, "value", value)


def read_results(run_dir: str | os.PathLike, out: str = "eval", settings: str | dict = "auto") -> list[dict]:
    """Every row of every CSV under ``<run_dir>/<out>/`` made with one evaluation setting, deduplicated on
    ``(task, a_len, b_len)``.

    Rows group by their ``SETTINGS_COLUMNS`` (files written before settings were recorded form one group, its
    settings all None). ``settings`` picks the rows:
        "auto"  the group of the settings ``arith.load(run_dir)`` and a grid without eval.* overrides use
                (`settings.default_settings`) when it has rows, else the group written last;
        "all"   every group (a cell then appears once per group);
        a dict  ``{column: value}``: the rows that match every given column, e.g. ``{"k": 5}`` or
                ``{"vote_ks": [0, 3, 5]}`` (an empty vote set or a missing value: None).
    Files are read oldest first (ties by name), so where two files hold the same cell the most recently
    written wins. Returns a list of dicts (numbers parsed; a column missing from a file is ``None``;
    ``vote_ks`` stays text, e.g. "0 3 5"), sorted by task, a_len, b_len (and settings with "all");
    ``[]`` when there is nothing to read. ``pandas.DataFrame(rows)`` if you want one.
    """
    folder = Path(run_dir) / out
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.csv"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    merged: dict[tuple, dict] = {}
    written: dict[tuple, int] = {}  # settings group -> index of the last file that holds it
    columns: list[str] = []
    for order, path in enumerate(files):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or ())
            if not header:
                continue  # an empty file: nothing written yet
            if not set(BASE_COLUMNS) <= set(header):
                raise DataError(f"{path}: not an eval CSV, header must start with {','.join(BASE_COLUMNS)}")
            columns += [c for c in header if c not in columns]
            for line, raw in enumerate(reader, start=2):
                row = {k: _parse(v) for k, v in raw.items() if k is not None and k != "vote_ks"}
                if any(not isinstance(row[c], int) for c in _INT_COLUMNS) or row["task"] is None:
                    raise DataError(f"{path}:{line}: malformed row {raw}")
                row["task"] = str(row["task"])
                if "vote_ks" in raw:
                    row["vote_ks"] = raw["vote_ks"] or None
                group = tuple(_setting(c, raw.get(c)) for c in SETTINGS_COLUMNS)
                merged[(row["task"], row["a_len"], row["b_len"], group)] = row
                written[group] = order
    keep = _pick_groups(run_dir, written, settings)
    picked = sorted(
        ((key, r) for key, r in merged.items() if key[3] in keep),
        key=lambda kv: (kv[0][:3], tuple(str(v) for v in kv[0][3])),
    )
    return [{c: r.get(c) for c in columns} for _, r in picked]


def _pick_groups(run_dir, written: dict[tuple, int], settings: str | dict) -> set[tuple]:
    if settings == "all" or not written:
        return set(written)
    if isinstance(settings, dict):
        unknown = set(settings) - set(SETTINGS_COLUMNS)
        if unknown:
            raise ConfigError(f"settings {sorted(unknown)} unknown; valid: {', '.join(SETTINGS_COLUMNS)}")
        want = {SETTINGS_COLUMNS.index(c): _setting(c, v) for c, v in settings.items()}
        return {g for g in written if all(g[i] == v for i, v in want.items())}
    if settings != "auto":
        raise ConfigError(
            f"settings={settings!r} unknown; valid: auto, all or a dict of {', '.join(SETTINGS_COLUMNS)}"
        )
    if len(written) > 1:
        default = default_settings(run_dir)
        if default is not None:
            cols = default.columns()
            group = tuple(_setting(c, cols[c]) for c in SETTINGS_COLUMNS)
            if group in written:
                return {group}
    return {max(written, key=written.get)}


def summary_by_length(rows: list[dict], task: str) -> list[tuple[int, float | None, float, int]]:
    """Per length L: (L, accuracy on the diagonal cell (L, L) or None, mean accuracy over the cells whose
    longer operand has L digits, number of such cells) for one task's rows."""
    by_len: dict[int, list[float]] = {}
    diagonal: dict[int, float] = {}
    for r in rows:
        if r["task"] != task or r.get("acc") is None:
            continue
        length = max(r["a_len"], r["b_len"])
        by_len.setdefault(length, []).append(float(r["acc"]))
        if r["a_len"] == r["b_len"]:
            diagonal[length] = float(r["acc"])
    return [(L, diagonal.get(L), sum(v) / len(v), len(v)) for L, v in sorted(by_len.items())]


def format_summary(rows: list[dict], task: str, trained: int | None = None) -> str:
    lines = [
        f"{task}: accuracy (%) by operand length",
        f"{'length':>6} {'L x L':>7} {'max=L':>7} {'cells':>6}",
    ]
    for length, diag, mean, cells in summary_by_length(rows, task):
        mark = "  (trained)" if trained is not None and length <= trained else ""
        diag_text = f"{100 * diag:7.1f}" if diag is not None else f"{'-':>7}"
        lines.append(f"{length:>6} {diag_text} {100 * mean:7.1f} {cells:>6}{mark}")
    return "\n".join(lines)
