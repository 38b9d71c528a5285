"""The task interface (`TaskSpec`, `Examples`) and the train / eval hash split that every task shares.

Train / eval disjointness (the hash split): every example's operands (digits and lengths; for sorting the
numbers and the array length, not the labels) get a polynomial hash mod 2^31-1, mixed to 64 bits
(`digits.operand_hash`). The example is *held out* iff that hash % 50 == 0 (about 2% of each cell).
``split="train"`` resamples held-out rows until none is left; ``split="eval"`` keeps only held-out ones
(oversampled rejection sampling). So no evaluation example can appear in training, at any length.
Exceptions, by design:
- bitwise_or is exempt: its training set is exhaustive, evaluation is plain sampling.
- a cell (a_len, b_len) whose examples are all of one class (tiny cells: sorting one 1-digit number has ten
  examples, none held out) cannot be split; train and eval then both sample it plainly. Cells over
  `_SPLIT_CHECK_MAX` examples are assumed to hold both classes; smaller ones are checked once by a fixed-seed
  sample of 20x their size (each example is missed with probability ~e^-20).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError

HOLDOUT_MOD = 50
_SPLIT_CHECK_MAX = 10_000
_EVAL_OVERSAMPLE = 128  # candidates per wanted eval row: P(no held-out among them) = 0.98^128 ~ 7%
_MAX_ROUNDS = 1000


@dataclass(frozen=True, order=True)
class Cell:
    """One cell of an evaluation grid: the two lengths a task's problems are drawn with (`TaskSpec.make`)."""

    a_len: int
    b_len: int


@dataclass
class Examples:
    ids: np.ndarray  # (N, T) int64, right-padded with tok.pad_id; row = prompt (through '='), answer, EOS
    prompt_len: np.ndarray  # (N,) tokens up to and including '='
    length: np.ndarray  # (N,) tokens including EOS

    def __len__(self) -> int:
        return len(self.ids)


def id_array(ids, dtype) -> np.ndarray:
    return np.asarray(ids, dtype=dtype)


def digit_tokens(tok: ArithTokenizer, d: np.ndarray, dtype) -> np.ndarray:
    """Digit values -> token ids (an add when the tokenizer's digit ids are consecutive, else a lookup)."""
    first = tok.digit_ids[0]
    if list(tok.digit_ids) == list(range(first, first + 10)):
        return d.astype(dtype) + dtype(first)
    return id_array(tok.digit_ids, dtype)[d]


def clean_problem(problem: str) -> str:
    return "".join(problem.split())


class TaskSpec:
    """One task: sampling, tokens, the split, checking and the natural <-> reversed forms."""

    name: str = ""
    op: str = ""
    hash_split: bool = True
    pad_operands: bool = (
        False  # Position Coupling's zero-padded format (tasks.get_task(name, pad_operands=True))
    )
    # what the data, the grid, `solve`, the plots and the model card ask of a task
    example = ""  # a problem as `solve` reads it
    eval_script = "arithmetic_eval.py"  # the entry script that evaluates it on a grid
    axis_labels = ("length of operand 1", "length of operand 2")  # what a_len and b_len count
    lengths_alike = True  # a_len and b_len count the same thing (an n x n training region reads "n")
    extra_columns: tuple[str, ...] = ()  # grid result columns beyond exact match (`extra_results`)
    extra_panels: dict[str, str] = {}  # {result column: title} of heatmaps drawn beside exact match
    formats: tuple[str, ...] = ("direct",)  # the answer formats it has (data.format)
    answer_format = "direct"  # this spec's (tasks.get_task(name, answer_format=...))
    close_frac = 0.0  # sorting's close numbers in training (tasks.get_task(name, close_frac=...))
    exhaustive = False  # training stores `every_example(tok, max_a, max_b)` once, whatever data.n_train

    def __init__(self) -> None:
        self._splittable_cache: dict[tuple[int, int], bool] = {}

    # ------------------------------------------------------------ to implement per task
    def _sample(self, rng, a_len, b_len, wa: int, wb: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _hash(self, ops: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _tokens(self, tok: ArithTokenizer, ops, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def cell_size(self, a_len: int, b_len: int) -> int:
        """Number of distinct operand tuples in a cell (a Python int, may be huge)."""
        raise NotImplementedError

    def check(self, text: str) -> bool:
        raise NotImplementedError

    def prompt(self, problem: str) -> str:
        raise NotImplementedError

    def answer(self, reversed_answer: str) -> str:
        return reversed_answer[::-1]

    def work(self, reversed_answer: str) -> str:
        """The model's whole output after '=' for a person to read (`solve(..., show_work=True)`); a format with
        a scratchpad spells out its steps."""
        return reversed_answer

    def max_answer_len(self, a_len: int, b_len: int) -> int:
        """Most answer tokens (EOS included) of a problem of the cell."""
        raise NotImplementedError

    def answer_lengths(self, a_len: int, b_len: int) -> tuple[int, int]:
        """(fewest, most) answer tokens before EOS that a problem of these operand lengths can have: what a
        label of unknown truth must satisfy (self-improvement's length filter)."""
        raise NotImplementedError

    def cell_cost(self, a_len: int, b_len: int) -> float:
        """Relative cost of decoding one example of the cell (the grid's shard balancer): with a KV cache, about
        (prompt + answer tokens) squared."""
        raise NotImplementedError

    def problem_cell(self, digit_runs: list[int]) -> tuple[int, int]:
        """The (a_len, b_len) cell of a prompt from the lengths of its runs of digits, in order."""
        return digit_runs[0], digit_runs[-1]

    def extra_results(self, result: dict) -> dict:
        return {}  # the `extra_columns` of a grid row from `quick.evaluate_cell`'s result

    def describe_lengths(self, a: int, b: int) -> str:
        """The training lengths in words (the model card), e.g. "1-20 digits"."""
        return (f"1-{a} digits" if a > 1 else "1 digit") if a == b else f"1-{a} x 1-{b} digits"

    def _padded_answer_len(self, w: np.ndarray) -> np.ndarray:
        """Answer digits in the padded format (data.pad_operands) for operands of w digits each."""
        raise ConfigError(
            f"data.pad_operands is not defined for {self.name}; valid: addition, multiplication"
        )

    # ------------------------------------------------------------ shared
    def validate_lengths(self, max_a: int, max_b: int) -> None:
        if max_a < 1 or max_b < 1:
            raise ConfigError(f"{self.name}: operand lengths must be >= 1, got {max_a}x{max_b}")

    def lengths(
        self, rng, n: int, max_a: int, max_b: int, power: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over every pair (1..max_a) x (1..max_b) (power 0), else each axis independently with P(l)
        proportional to l ** power (data.length_power)."""
        self.validate_lengths(max_a, max_b)
        if not power:  # the uniform draw, exactly as before the key existed
            return rng.integers(1, max_a + 1, size=n), rng.integers(1, max_b + 1, size=n)
        return _powered(rng, n, max_a, power), _powered(rng, n, max_b, power)

    def make(self, tok, rng, a_len, b_len, split: str = "train", *, dtype=np.int64) -> Examples:
        """Examples with exactly these lengths per row. `dtype` is for callers that store narrow ids."""
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        a_len = np.array(a_len, dtype=np.int64)  # copies: resampling writes into the operand dict
        b_len = np.array(b_len, dtype=np.int64)
        if len(a_len) == 0:
            return Examples(np.zeros((0, 0), dtype), np.zeros(0, np.int64), np.zeros(0, np.int64))
        self.validate_lengths(int(a_len.max()), int(b_len.max()))
        if a_len.min() < 1 or b_len.min() < 1:
            raise ValueError(f"{self.name}: lengths must be >= 1")
        ops = self._draw(rng, a_len, b_len, split)
        narrow = np.uint8 if tok.vocab_size <= 256 else np.int32
        ids, prompt_len, length = self._tokens(tok, ops, narrow)
        return Examples(ids.astype(dtype), prompt_len.astype(np.int64), length.astype(np.int64))

    def held_out(self, ops) -> np.ndarray:
        return self._hash(ops) % np.uint64(HOLDOUT_MOD) == 0

    def splittable(self, a_len: int, b_len: int) -> bool:
        """True iff the cell holds both held-out and training examples (see the module docstring)."""
        key = (int(a_len), int(b_len))
        if key not in self._splittable_cache:
            size = self.cell_size(*key)
            ok = True
            if size <= _SPLIT_CHECK_MAX:
                rng = np.random.default_rng([12345, *key])
                n = 20 * size
                ops = self._sample(rng, np.full(n, key[0]), np.full(n, key[1]), *key)
                h = self.held_out(ops)
                ok = bool(h.any() and not h.all())
            self._splittable_cache[key] = ok
        return self._splittable_cache[key]

    def _active(self, a_len: np.ndarray, b_len: np.ndarray) -> np.ndarray:
        """Rows whose cell takes part in the hash split."""
        if not self.hash_split:
            return np.zeros(len(a_len), dtype=bool)
        nb = int(b_len.max()) + 1
        cell = a_len * nb + b_len
        present = np.flatnonzero(np.bincount(cell))
        table = np.zeros(int(cell.max()) + 1, dtype=bool)
        for c in present:
            table[c] = self.splittable(c // nb, c % nb)
        return table[cell]

    def _draw(self, rng, a_len, b_len, split: str) -> dict[str, np.ndarray]:
        wa, wb = int(a_len.max()), int(b_len.max())
        ops = self._sample(rng, a_len, b_len, wa, wb)
        active = self._active(a_len, b_len)
        if split == "train":
            todo = np.flatnonzero(active & self.held_out(ops))
            for _ in range(_MAX_ROUNDS):
                if todo.size == 0:
                    return ops
                new = self._sample(rng, a_len[todo], b_len[todo], wa, wb)
                _put(ops, todo, new)
                todo = todo[self.held_out(new)]
        else:
            todo = np.flatnonzero(active)
            for _ in range(_MAX_ROUNDS):
                if todo.size == 0:
                    return ops
                rep = np.repeat(todo, _EVAL_OVERSAMPLE)
                cand = self._sample(rng, a_len[rep], b_len[rep], wa, wb)
                ok = self.held_out(cand).reshape(len(todo), _EVAL_OVERSAMPLE)
                got = ok.any(axis=1)
                pick = np.arange(len(todo)) * _EVAL_OVERSAMPLE + ok.argmax(axis=1)
                _put(ops, todo[got], _take(cand, pick[got]))
                todo = todo[~got]
        raise RuntimeError(f"{self.name}: hash-split sampling did not converge (a bug)")


def _take(ops: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in ops.items()}


def _put(ops: dict, idx: np.ndarray, new: dict) -> None:
    for k, v in ops.items():
        v[idx] = new[k]


def _powered(rng, n: int, top: int, power: float) -> np.ndarray:
    """n lengths in 1..top with P(l) proportional to l ** power."""
    weight = np.arange(1, top + 1, dtype=np.float64) ** power
    return rng.choice(np.arange(1, top + 1), size=n, p=weight / weight.sum())
