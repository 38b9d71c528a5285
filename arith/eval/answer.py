"""`solve` and `solve_many`: the answers of a loaded run to problems written the natural way (`Run.solve`,
`Run.solve_many`, `python -m arith.solve`).

    run.solve("12345+678")                                    # '13023'
    run.solve_many(["12345+678", "9+9", "12a+3"], errors="return")
    # ['13023', '18', DataError("cannot read '12a+3': ...")]

`solve_many` reads every problem first, sorts them by prompt length and decodes batches of up to batch_size
consecutive ones together (one KV cache), each row stopped at its own answer length: the same answers as `solve`
one by one, at a fraction of the time (one forward pass per token for a whole batch instead of one per problem;
the rows that finished leave the batch, and on a CPU its prompts are prefilled in groups of like lengths:
`arith.eval.decode.generate`).
A batch mixes prompt lengths when the model allows left padding (`ArithModel.pads_left`: Abacus, coupling, NoPE
and learned absolute positions; no relative positions, RoPE, ReRoPE and FIRE; pre-LN, post-LN and parallel
blocks): the shorter prompts get PAD tokens at their left, which no real token sees and from which no position
counts, and a batch's shortest prompt is at least half its longest (or within `SPREAD` tokens of it), so no row
is more than half padding (or SPREAD PADs). Any other model (SAS-P blocks, a scheme added without `left_pad`) gets
batches of one prompt length.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from arith.data.spec import Cell
from arith.data.tasks import task_for
from arith.errors import ArithError, ConfigError, DataError
from arith.eval import order_vote
from arith.eval import settings as eval_settings
from arith.eval.reach import UntrainedPositionsWarning, position_needs, untrained_rows
from arith.eval.vote import decode
from arith.model.positions import AbacusPos, LearnedPos, check_positions

__all__ = ["SETTINGS", "solve", "solve_many"]

# the eval.* keywords of `solve` and `solve_many` (None: the run's), named as `eval_settings.resolve` names them
SETTINGS = tuple(
    "recurrences k vote_ks vote_mode attn_scale attn_scale_mode attn_scale_where row_window order_votes"
    " label_permutation order_view_items".split()
)
ERRORS = ("raise", "return")
# a mixed batch: its shortest prompt at least half its longest, or at most this many tokens shorter
SPREAD = 16


def solve(
    run,
    problem: str,
    recurrences: int | None = None,
    k: int | None = None,
    vote_ks: list[int] | None = None,
    vote_mode: str = "answer",
    attn_scale: float = 1.0,
    attn_scale_mode: str = "const",
    attn_scale_where: str = "all",
    row_window: int | None = None,
    show_work: bool = False,
    order_votes: int | None = None,
    label_permutation: bool | None = None,
    order_view_items: int | None = None,
) -> str:
    """The answer of `run` (an `arith.runs.Run`: its checkpoint and weights are `run.checkpoint`, `run.weights`)
    to `problem`, in natural form; the keyword arguments are the eval.* settings of the grid (None = the run's
    defaults). show_work: the model's whole output after '=' spelled out (a scratchpad's steps, then the answer).
    Raises DataError for a problem it cannot read or answer, ConfigError past the position table."""
    args = locals()
    settings = {name: args[name] for name in SETTINGS}
    answers, warning = _answers(run, [problem], settings, batch_size=1, show_work=show_work, progress=False)
    if warning:
        warnings.warn(warning, UntrainedPositionsWarning, stacklevel=3)
    if isinstance(answers[0], ArithError):
        raise answers[0]
    return answers[0]


def solve_many(
    run,
    problems: Iterable[str],
    batch_size: int = 256,
    errors: str = "raise",
    show_work: bool = False,
    progress: bool = False,
    **settings,
) -> list:
    """The answers of `run` to `problems`, in order: exactly what `solve` gives each one, decoded in batches of up
    to batch_size problems of like prompt lengths, left-padded (of one prompt length when the model does not allow
    left padding; the module docstring). settings: the eval.* keywords of `solve` (recurrences, k,
    vote_ks, vote_mode, attn_scale, attn_scale_mode, attn_scale_where, row_window, order_votes,
    label_permutation, order_view_items); an invalid one raises
    ConfigError for the whole call.

    errors="raise" (default): a problem it cannot read (DataError), one past the position table (ConfigError)
    or one the model leaves without an end-of-sequence token (DataError) raises the first such error, in the
    order of `problems` (a problem it cannot read before any decoding); the result is a list of strings.
    errors="return": nothing is raised for a single problem; its place in the list holds its error (an
    `arith.errors.ArithError`) instead of a string, and every other problem is answered.

    A problem that reads position rows training never reached gives one `UntrainedPositionsWarning` for the
    whole call. progress: a tqdm bar on stderr (problems answered)."""
    if errors not in ERRORS:
        raise ValueError(f"errors={errors!r} unknown; valid: {', '.join(ERRORS)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise TypeError(
            f"solve_many() got unexpected keyword arguments {unknown}; valid: {', '.join(SETTINGS)}"
        )
    answers, warning = _answers(
        run, list(problems), settings, batch_size, show_work, progress, stop_early=errors == "raise"
    )
    if warning:
        warnings.warn(warning, UntrainedPositionsWarning, stacklevel=3)
    if errors == "raise":
        first = next((a for a in answers if isinstance(a, ArithError)), None)
        if first is not None:
            raise first
    return answers


@dataclass(frozen=True)
class _Read:
    """A problem read: its prompt ids, its cell and the most tokens its answer may take (EOS included)."""

    ids: np.ndarray
    cell: Cell
    max_new: int


def _answers(run, problems, settings, batch_size, show_work, progress, stop_early=False):
    """(answers: a string or the ArithError of each problem, the untrained-rows warning or None). stop_early:
    no decoding when a problem cannot be read (its error is all the caller raises)."""
    spec = task_for(run.cfg.data)
    s = eval_settings.for_run(run, prefix="", task=(spec.name, spec.answer_format), **settings)
    answers: list = [None] * len(problems)
    reads: dict[int, _Read] = {}
    checked: dict[Cell, ArithError | None] = {}  # position_needs once per cell
    probe = _may_overflow(run.cfg.model, max(s.offsets))
    for i, problem in enumerate(problems):
        try:
            reads[i] = _read(run, spec, problem, max(s.offsets), checked, probe)
        except ArithError as e:
            answers[i] = e
            if stop_early:
                return answers, None
    cells = sorted({r.cell for r in reads.values()})
    warning = untrained_rows(run.cfg, run.tok, cells, max(s.offsets), run_dir=run.run_dir) if cells else None
    batches = _batches(
        reads,
        batch_size,
        mixed=bool(getattr(run.model, "pads_left", False)),
        max_tokens=_table_rows(run.model),
    )
    with (
        tqdm(total=len(problems), unit="problem", file=sys.stderr, disable=not progress) as bar,
        eval_settings.applied(run, s),
    ):
        bar.update(len(problems) - len(reads))  # the unreadable ones: done
        for batch in batches:
            for i, row in zip(batch, _rows(run, s, [reads[i] for i in batch])):
                answers[i] = (
                    row if isinstance(row, ArithError) else _text(run, spec, problems[i], row, show_work)
                )
            bar.update(len(batch))
    return answers, warning


def _batches(
    reads: dict[int, _Read], batch_size: int, mixed: bool, max_tokens: int | None = None
) -> list[list[int]]:
    """The problems (keys of `reads`) in batches of up to batch_size: sorted by prompt length (then answer length),
    cut into runs of consecutive ones; mixed: a run spans prompt lengths while its shortest prompt is at least half
    its longest or at most SPREAD tokens shorter, else one prompt length a batch. max_tokens (a learned position
    table's rows): a mixed batch also stays within it, its longest prompt and longest answer together (each row
    alone fits; a batch of both would read rows past the table and be redone one by one)."""
    order = sorted(reads, key=lambda i: (len(reads[i].ids), reads[i].max_new, i))
    batches, batch, most_new = [], [], 0
    for i in order:
        if batch:
            shortest, n = len(reads[batch[0]].ids), len(reads[i].ids)
            fits = n - shortest <= max(SPREAD, n // 2) if mixed else n == shortest
            if max_tokens is not None and mixed:
                fits = fits and n + max(most_new, reads[i].max_new) - 1 <= max_tokens
            if len(batch) == batch_size or not fits:
                batches.append(batch)
                batch, most_new = [], 0
        batch.append(i)
        most_new = max(most_new, reads[i].max_new)
    return batches + [batch] if batch else batches


def _table_rows(model) -> int | None:
    """The rows of a learned absolute position table, read by token index (None for Abacus, coupling and NoPE,
    whose rows do not grow with the padded width)."""
    slot = getattr(model, "abs_pos", None)
    return slot.max_pos if isinstance(slot, LearnedPos) and not isinstance(slot, AbacusPos) else None


def _read(run, spec, problem, k: int, checked: dict, probe: bool = True) -> _Read:
    """A problem's prompt and cell; DataError when it cannot be read, ConfigError past the position table (the
    cell's problems probed once, `checked`; probe False: its lengths only, `_may_overflow`)."""
    if not isinstance(problem, str):
        raise DataError(f"cannot read {problem!r}: a problem is a string, e.g. {spec.example!r}")
    try:
        prompt = spec.prompt(problem.strip())
    except ValueError as e:
        raise DataError(f"cannot read {problem!r}: {e}") from None
    ids = np.asarray(run.tok.encode(prompt), dtype=np.int64)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], run.tok.is_digit(ids).astype(np.int64), [0]])))
    cell = Cell(*spec.problem_cell((edges[1::2] - edges[::2]).tolist()))  # runs of digits: even to odd edges
    # a clear error past the position table (a warning past the rows training reached)
    if cell not in checked:
        try:
            if probe:
                position_needs(run.cfg, run.tok, cell.a_len, cell.b_len, training=False, k=k)
            else:
                spec.validate_lengths(cell.a_len, cell.b_len)  # what the probe would raise besides
            checked[cell] = None
        except ArithError as e:
            checked[cell] = e
    if checked[cell] is not None:
        raise type(checked[cell])(*checked[cell].args)
    # answer tokens and EOS (a scratchpad's steps too)
    return _Read(ids, cell, spec.max_answer_len(cell.a_len, cell.b_len))


def _may_overflow(model_cfg, k: int) -> bool:
    """Whether some problem could read past the position table at offset k, so that `_read` probes each cell
    (`position_needs` samples its problems, about a millisecond a cell): not with NoPE, nor with an Abacus or
    coupling table whose rows wrap within it (model.row_period), whose check passes at any length."""
    try:
        check_positions(model_cfg, max_tokens=sys.maxsize, max_digits=sys.maxsize, training=False, k=k)
    except ConfigError:
        return True
    return False


def _rows(run, s, reads: list[_Read]) -> list:
    """`_decode`, or each problem's error: a row past the position table stops its whole batch, whose problems
    are then decoded one by one."""
    try:
        return _decode(run, s, reads)
    except ArithError as e:
        if len(reads) == 1:
            return [e]
        return [row for r in reads for row in _rows(run, s, [r])]


def _decode(run, s, reads: list[_Read]) -> list[list[int]]:
    """The decoded rows of a batch, each cut at its own max_new; shorter prompts left-padded with PAD (`pad`)."""
    device = next(run.model.parameters()).device
    limits = [r.max_new for r in reads]
    width = max(len(r.ids) for r in reads)
    pads = [width - len(r.ids) for r in reads]
    ids = np.full((len(reads), width), run.tok.pad_id, dtype=np.int64)
    for row, r, p in zip(ids, reads, pads):
        row[p:] = r.ids
    out = decode(
        run.model,
        torch.as_tensor(ids, device=device),
        max_new=max(limits),
        eos_id=run.tok.eos_id,
        pad_id=run.tok.pad_id,
        **s.decode_args(),
        items=order_vote.ItemTokens.of(run.tok) if s.order_votes > 1 or s.label_permutation else None,
        limits=limits if len(set(limits)) > 1 else None,
        pad=torch.as_tensor(pads, device=device) if any(pads) else None,
    )
    return [row[:n] for row, n in zip(out.tolist(), limits)]


def _text(run, spec, problem: str, row: list[int], show_work: bool) -> str | ArithError:
    """The answer in natural form (show_work: the whole output spelled out), or the DataError of a row that
    never wrote the end-of-sequence token."""
    if run.tok.eos_id not in row:
        return DataError(f"the model gave no answer for {problem!r} (no end-of-sequence token)")
    text = run.tok.decode(row)
    return spec.work(text) if show_work else spec.answer(text)
