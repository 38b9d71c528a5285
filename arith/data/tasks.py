"""Tasks: vectorized example generators, one `TaskSpec` per task, in the `TASKS` registry.

Formats (SPEC "Data formats"; numbers least-significant digit first, no spaces, no padding, no BOS):
addition ``21+543=753`` (12+345=357), subtraction ``21-543=333-`` (12-345=-333: the answer is the reversal of
the natural string, so a negative result ends in ``-``; with data.format=scratchpad ``21-543=766-333-``, see
`Subtraction`), multiplication ``21x43=804`` (scratchpad ``21x43=4e840,43D040``, see `Multiplication`), sorting
``a:503,b:7,c:14=b,c,a``, bitwise OR ``0100+00=0100``. Every row ends with EOS, then PAD.

The train / eval hash split and the `TaskSpec` interface live in `arith.data.spec`.
"""

from __future__ import annotations

import copy
import re
import zlib

import numpy as np

from arith.data import digits as D
from arith.data import mul_scratchpad as MS
from arith.data.sorting import Sorting
from arith.data.spec import HOLDOUT_MOD, Examples, TaskSpec, clean_problem, digit_tokens
from arith.errors import ConfigError

__all__ = [
    "HOLDOUT_MOD",
    "Sorting",
    "TASKS",
    "Examples",
    "TaskSpec",
    "eval_cell",
    "exhaustive_or",
    "get_task",
    "task_for",
    "train_examples",
]


# ---------------------------------------------------------------- + - x and OR: two operands


class _Binary(TaskSpec):
    """Two operands and an answer made of digits (plus a trailing '-' for negative differences)."""

    def _sample(self, rng, a_len, b_len, wa, wb):
        return {
            "a": D.random_digits(rng, a_len, wa),
            "la": a_len,
            "b": D.random_digits(rng, b_len, wb),
            "lb": b_len,
        }

    def _hash(self, ops):
        wa, wb = ops["a"].shape[1], ops["b"].shape[1]
        w = max(wa, wb)
        dig = np.zeros((len(ops["a"]), 2, w), dtype=np.uint8)
        dig[:, 0, :wa] = ops["a"]
        dig[:, 1, :wb] = ops["b"]
        return D.operand_hash(dig, np.stack([ops["la"], ops["lb"]], axis=1))

    def _result(self, ops) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(answer digits, answer length, negative flag or None)."""
        raise NotImplementedError

    def _padded_answer_len(self, w: np.ndarray) -> np.ndarray:
        """Answer digits in the padded format, for operands of w digits each (addition: w + 1)."""
        raise ConfigError(
            f"data.pad_operands is not defined for {self.name}; valid: addition, multiplication"
        )

    def _tokens(self, tok, ops, dtype):
        c, lc, neg = self._result(ops)
        a, la, b, lb = ops["a"], ops["la"], ops["b"], ops["lb"]
        if (
            self.pad_operands
        ):  # Position Coupling's format: operands zero-padded to one length, answer to w + 1
            w = np.maximum(la, lb)
            width = max(a.shape[1], b.shape[1])
            a, b, la, lb = D.widen(a, width), D.widen(b, width), w, w
            lc = self._padded_answer_len(w)
            c = D.widen(c, int(lc.max()))
        answer = [(digit_tokens(tok, c, dtype), lc)]
        if neg is not None:
            answer.append((np.full((len(c), 1), tok.op_ids["-"], dtype=dtype), neg.astype(np.int64)))
        return self._rows(tok, a, la, b, lb, answer, dtype)

    def _rows(self, tok, a, la, b, lb, answer: list, dtype):
        """(ids, prompt length, length) of the rows a, the operator, b, '=', the `answer` segments
        (`digits.assemble`'s (tokens, lens) pairs), EOS."""
        segs = [
            (digit_tokens(tok, a, dtype), la),
            (tok.op_ids[self.op], None),
            (digit_tokens(tok, b, dtype), lb),
            (tok.eq_id, None),
            *answer,
            (tok.eos_id, None),
        ]
        ids, length, starts = D.assemble(segs, len(a), tok.pad_id, dtype)
        return ids, starts[4], length

    def cell_size(self, a_len, b_len):
        def count(n):
            return 10 if n == 1 else 9 * 10 ** (n - 1)

        return count(a_len) * count(b_len)

    def _natural(self, text: str) -> tuple[str, str, str] | None:
        m = re.fullmatch(rf"([0-9]+){re.escape(self.op)}([0-9]+)=(-?[0-9]+|[0-9]+-)", text)
        return m.groups() if m else None

    def _expected(self, a: int, b: int) -> str:
        raise NotImplementedError

    def check(self, text: str) -> bool:
        parts = self._natural(text)
        if parts is None:
            return False
        a, b, ans = parts
        expected = self._expected(int(a[::-1]), int(b[::-1]))[::-1]
        if self.pad_operands:  # zero padding: equal lengths, answer of w + 1 (addition) digits
            width = int(self._padded_answer_len(np.array([len(a)]))[0])
            return len(b) == len(a) and ans == expected.ljust(width, "0")
        return ans == expected

    _ops_accepted: tuple[str, ...] = ()

    def prompt(self, problem: str) -> str:
        p = clean_problem(problem)
        ops = "".join(re.escape(o) for o in self._ops_accepted)
        m = re.fullmatch(rf"([0-9]*)([{ops}])([0-9]*)", p)
        if m is None:
            found = re.sub(r"[0-9]", "", p) or "no operator"
            raise ValueError(
                f"{self.name}: expected <digits>{self.op}<digits>, got {problem!r} ({found!r} is not allowed)"
            )
        a, _, b = m.groups()
        if not a or not b:
            raise ValueError(f"{self.name}: empty operand in {problem!r}")
        a, b = self._normalize(a), self._normalize(b)
        if self.pad_operands:
            w = max(len(a), len(b))
            a, b = a.zfill(w), b.zfill(w)
        return f"{a[::-1]}{self.op}{b[::-1]}="

    def answer(self, reversed_answer: str) -> str:
        text = reversed_answer[::-1]
        if self.pad_operands and text.isdigit():
            return text.lstrip("0") or "0"  # the padded format writes the answer with leading zeros
        return text

    def _normalize(self, operand: str) -> str:
        return operand.lstrip("0") or "0"  # the model never saw leading zeros

    def max_answer_len(self, a_len, b_len):
        return max(a_len, b_len) + 2

    def cell_cost(self, a_len, b_len):
        return float(a_len + b_len + 1 + self.max_answer_len(a_len, b_len)) ** 2  # operands, op, '=', answer


class Addition(_Binary):
    name, op, example = "addition", "+", "12345+678"
    _ops_accepted = ("+",)

    def _result(self, ops):
        c = D.add(ops["a"], ops["b"])
        return c, D.num_len(c), None

    def _expected(self, a, b):
        return str(a + b)

    def _padded_answer_len(self, w):
        return w + 1

    def answer_lengths(self, a_len, b_len):
        w = max(a_len, b_len)
        return (w + 1, w + 1) if self.pad_operands else (w, w + 1)  # a carry out, or none


class Subtraction(_Binary):
    """Direct: ``21-543=333-`` (12-345=-333). Scratchpad (data.format=scratchpad), every step local in digit
    index: ``21-543=766-333-``: first the difference modulo 10^n (n = the longer operand's digits, zero-padded,
    borrows chained from the least significant digit: 12 - 345 = -333 = 667 - 1000), then the final borrow as a
    sign (``+`` or ``-``: it depends on the top digits, which the last step of the chain reads), then the
    magnitude (n digits, zero-padded: the modulus copied, or its complement 1000 - 667 when negative) and a
    trailing ``-`` when negative, as the direct format writes it. `answer` returns the natural form."""

    name, op, example = "subtraction", "-", "12345-678"
    _ops_accepted = ("-",)
    formats = ("direct", "scratchpad")

    def _result(self, ops):
        c, neg = D.subtract(ops["a"], ops["la"], ops["b"], ops["lb"])
        return c, D.num_len(c), neg

    def _tokens(self, tok, ops, dtype):
        if self.answer_format == "direct":
            return super()._tokens(tok, ops, dtype)
        a, la, b, lb = ops["a"], ops["la"], ops["b"], ops["lb"]
        mag, neg = D.subtract(a, la, b, lb)  # (N, w) digits of |a - b|, zero beyond
        n = np.maximum(la, lb)
        raw = np.where(neg[:, None], D.complement(mag), mag)  # (a - b) mod 10^w, first n digits
        minus, plus = tok.op_ids["-"], tok.op_ids["+"]
        answer = [
            (digit_tokens(tok, raw, dtype), n),
            (np.where(neg, minus, plus).astype(dtype)[:, None], np.ones(len(a), np.int64)),
            (digit_tokens(tok, mag, dtype), n),
            (np.full((len(a), 1), minus, dtype=dtype), neg.astype(np.int64)),
        ]
        return self._rows(tok, a, la, b, lb, answer, dtype)

    def check(self, text):
        if self.answer_format == "direct":
            return super().check(text)
        m = re.fullmatch(r"([0-9]+)-([0-9]+)=([0-9]+)([+-])([0-9]+)(-?)", text)
        if m is None:
            return False
        a, b, raw, sign, mag, tail = m.groups()
        x, y, n = int(a[::-1]), int(b[::-1]), max(len(a), len(b))
        want = (
            str((x - y) % 10**n).zfill(n)[::-1],
            "-" if x < y else "+",
            str(abs(x - y)).zfill(n)[::-1],
            "-" if x < y else "",
        )
        return (raw, sign, mag, tail) == want

    def answer(self, reversed_answer):
        if self.answer_format == "direct":
            return super().answer(reversed_answer)
        m = re.fullmatch(r"[0-9]*[+-]([0-9]+)(-?)", reversed_answer)
        if m is None:  # malformed: returned as written (reversed), so it never equals a right answer
            return reversed_answer[::-1]
        digits = m.group(1)[::-1].lstrip("0") or "0"
        return f"-{digits}" if m.group(2) and digits != "0" else digits

    def work(self, reversed_answer: str) -> str:
        if self.answer_format == "direct":
            return super().work(reversed_answer)
        m = re.fullmatch(r"([0-9]*)([+-])(.*)", reversed_answer)
        if m is None:
            return super().work(reversed_answer)
        raw, sign, _ = m.groups()
        n = len(raw)
        return (
            f"(a - b) mod 10^{n} = {raw[::-1]} (borrows from the right); sign {sign}; "
            f"answer {self.answer(reversed_answer)}"
        )

    def _expected(self, a, b):
        return str(a - b)

    def max_answer_len(self, a_len, b_len):
        n = max(a_len, b_len)
        if self.answer_format == "scratchpad":
            return 2 * n + 3  # modulus, sign, magnitude, '-', EOS
        return n + 2  # digits, '-', EOS (no carry out of a difference)

    def answer_lengths(self, a_len, b_len):
        n = max(a_len, b_len)
        if self.answer_format == "scratchpad":
            return 2 * n + 1, 2 * n + 2
        return 1, n + 1  # 0 .. the longer operand's digits, and maybe '-'


class Multiplication(_Binary):
    """Direct: ``21x43=804`` (12 x 34 = 408). Scratchpad (data.format=scratchpad, `arith.data.mul_scratchpad`):
    shift-and-add, one line per multiplier digit, every step local in digit index: ``21x43=4e840,43D040``."""

    name, op, example = "multiplication", "x", "123x45"
    _ops_accepted = ("x", "*")
    formats = ("direct", "scratchpad")

    def _tokens(self, tok, ops, dtype):
        if self.answer_format == "direct":
            return super()._tokens(tok, ops, dtype)
        a, la, b, lb = ops["a"], ops["la"], ops["b"], ops["lb"]
        return self._rows(tok, a, la, b, lb, MS.segments(tok, a, la, b, lb, dtype), dtype)

    def check(self, text):
        if self.answer_format == "direct":
            return super().check(text)
        m = re.fullmatch(r"([0-9]+)x([0-9]+)=(.*)", text)
        if m is None:
            return False
        a, b, work = m.groups()
        return work == MS.text(int(a[::-1]), int(b[::-1]))

    def answer(self, reversed_answer):
        if self.answer_format == "direct":
            return super().answer(reversed_answer)
        got = MS.product(reversed_answer)
        return f"?{reversed_answer}" if got is None else got  # malformed: never equal to a number

    def work(self, reversed_answer):
        if self.answer_format == "direct":
            return super().work(reversed_answer)
        return MS.describe(reversed_answer)

    def _result(self, ops):
        c = D.multiply(ops["a"], ops["b"])
        return c, D.num_len(c), None

    def _expected(self, a, b):
        return str(a * b)

    def _padded_answer_len(self, w):
        return 2 * w

    def max_answer_len(self, a_len, b_len):
        if self.answer_format == "scratchpad":
            return MS.length(a_len, b_len)
        return a_len + b_len + 1

    def answer_lengths(self, a_len, b_len):
        if self.answer_format == "scratchpad":
            return (MS.length(a_len, b_len) - 1,) * 2
        if self.pad_operands:
            w = 2 * max(a_len, b_len)
            return w, w
        return (1 if min(a_len, b_len) == 1 else a_len + b_len - 1), a_len + b_len  # x 0 is one digit


class BitwiseOr(_Binary):
    """One operand is one-hot (the shorter; either when equal lengths), the other all zeros."""

    name, op, example = "bitwise_or", "+", "0100+00"
    hash_split, exhaustive = False, True  # training is exhaustive by design
    _ops_accepted = ("+", "|")

    def _sample(self, rng, a_len, b_len, wa, wb):
        n = len(a_len)
        hot_a = np.where(a_len == b_len, rng.integers(0, 2, size=n) == 1, a_len < b_len)
        hot = (rng.random(n) * np.minimum(a_len, b_len)).astype(np.int64)
        return _or_digits(a_len, b_len, hot_a, hot, wa, wb)

    def _result(self, ops):
        w = max(ops["a"].shape[1], ops["b"].shape[1])
        c = np.zeros((len(ops["a"]), w), dtype=np.uint8)
        c[:, : ops["a"].shape[1]] |= ops["a"]
        c[:, : ops["b"].shape[1]] |= ops["b"]
        return c, np.maximum(ops["la"], ops["lb"]), None

    def cell_size(self, a_len, b_len):
        return min(a_len, b_len) * (2 if a_len == b_len else 1)

    def check(self, text):
        m = re.fullmatch(r"([01]+)\+([01]+)=([01]+)", text)
        if m is None:
            return False
        a, b, ans = m.groups()
        w = max(len(a), len(b))
        a, b = a.ljust(w, "0"), b.ljust(w, "0")  # LSB first: pad at the end
        return ans == "".join("1" if "1" in (x, y) else "0" for x, y in zip(a, b))

    def _normalize(self, operand):
        if set(operand) - {"0", "1"}:
            raise ValueError(f"bitwise_or: operands are 0/1 strings, got {operand!r}")
        return operand  # leading zeros are part of a bit vector's length

    def max_answer_len(self, a_len, b_len):
        return max(a_len, b_len) + 1

    def answer_lengths(self, a_len, b_len):
        return max(a_len, b_len), max(a_len, b_len)

    def every_example(self, tok, max_a: int, max_b: int) -> Examples:
        return exhaustive_or(tok, max_a, max_b)


def _or_digits(a_len, b_len, hot_a, hot, wa, wb) -> dict[str, np.ndarray]:
    n = len(a_len)
    a = np.zeros((n, wa), dtype=np.uint8)
    b = np.zeros((n, wb), dtype=np.uint8)
    ra, rb = np.flatnonzero(hot_a), np.flatnonzero(~hot_a)
    a[ra, hot[ra]] = 1
    b[rb, hot[rb]] = 1
    return {"a": a, "la": a_len, "b": b, "lb": b_len}


# ---------------------------------------------------------------- registry and entry points

TASKS: dict[str, TaskSpec] = {
    t.name: t for t in (Addition(), Subtraction(), Multiplication(), Sorting(), BitwiseOr())
}


_VARIANTS: dict[tuple[str, bool, str, float], TaskSpec] = {}


def get_task(
    name, pad_operands: bool = False, answer_format: str = "direct", close_frac: float = 0.0
) -> TaskSpec:
    """The task's spec by name (a spec passes through); pad_operands: its zero-padded variant; answer_format:
    what the model writes after '=' (data.format: direct, or scratchpad where the task has one); close_frac:
    sorting's share of training rows of close numbers (data.close_frac)."""
    if isinstance(name, TaskSpec):
        return name
    name, answer_format = str(name), str(answer_format)
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    base = TASKS[name]
    if answer_format not in base.formats:
        raise ConfigError(
            f"data.format={answer_format} is not defined for {name}; valid: {', '.join(base.formats)}"
        )
    close_frac = float(close_frac)
    if close_frac and name != "sorting":
        raise ConfigError(f"data.close_frac={close_frac:g} is defined for sorting only, not {name}")
    if not pad_operands and answer_format == "direct" and not close_frac:
        return base
    key = (name, bool(pad_operands), answer_format, close_frac)
    if key not in _VARIANTS:
        spec = copy.copy(base)
        spec.pad_operands, spec.answer_format = bool(pad_operands), answer_format
        spec.close_frac = close_frac
        if pad_operands:
            if answer_format != "direct":
                raise ConfigError(f"data.pad_operands and data.format={answer_format} do not combine")
            spec._padded_answer_len(np.array([1]))  # raises for tasks without a padded format
        spec._splittable_cache = {}
        _VARIANTS[key] = spec
    return _VARIANTS[key]


def task_for(data_cfg) -> TaskSpec:
    """The spec a data config trains on (its task, padded when data.pad_operands, in its data.format)."""
    return get_task(
        data_cfg.task,
        bool(getattr(data_cfg, "pad_operands", False)),
        str(getattr(data_cfg, "format", "direct")),
        float(getattr(data_cfg, "close_frac", 0.0)),
    )


def train_lengths(data_cfg) -> tuple[int, int]:
    """(longest first operand, longest second) a data config trains on: data.max_len_b null -> data.max_len."""
    return int(data_cfg.max_len), int(data_cfg.max_len if data_cfg.max_len_b is None else data_cfg.max_len_b)


def train_examples(
    task, tok, rng, n: int, max_a: int, max_b: int, *, dtype=np.int64, length_power: float = 0.0
) -> Examples:
    """n training examples, lengths uniform over (1..max_a) x (1..max_b) (or weighted by length **
    length_power, data.length_power); bitwise_or samples here too."""
    spec = get_task(task)
    a_len, b_len = spec.lengths(rng, n, max_a, max_b, length_power)
    return spec.make(tok, rng, a_len, b_len, split="train", dtype=dtype)


def eval_cell(task, tok, a_len: int, b_len: int, n: int, seed: int) -> Examples:
    """n held-out examples of one cell; deterministic in (task, a_len, b_len, n, seed)."""
    spec = get_task(task)
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode()), a_len, b_len, n])
    return spec.make(tok, rng, np.full(n, a_len), np.full(n, b_len), split="eval")


def exhaustive_or(tok, max_a: int, max_b: int) -> Examples:
    """Every (i, j, hot index, and which operand is hot when i == j): sum over cells of min(i, j) (x2 if i == j)."""
    spec = TASKS[BitwiseOr.name]
    spec.validate_lengths(max_a, max_b)
    cells = []  # (i, j, hot_a, count); the loops run over cells, the rows are built by numpy
    for i in range(1, max_a + 1):
        for j in range(1, max_b + 1):
            for hot_a in (True, False) if i == j else (i < j,):
                cells.append((i, j, hot_a, min(i, j)))
    i, j, hot_a, count = (np.array(c) for c in zip(*cells))
    a_len, b_len, hot_a = np.repeat(i, count), np.repeat(j, count), np.repeat(hot_a.astype(bool), count)
    hot = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # 0..count-1 within each cell
    ops = _or_digits(a_len, b_len, hot_a.astype(bool), hot, max_a, max_b)
    ids, prompt_len, length = spec._tokens(tok, ops, np.int64)
    return Examples(ids, prompt_len, length)
