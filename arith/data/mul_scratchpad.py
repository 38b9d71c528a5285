"""Multiplication's scratchpad (data.format=scratchpad): shift-and-add, one line per digit of the multiplier.

For a (n digits) x b (m digits), least significant digit first, line i (i = 0..m-1) is

    P_i  L_i  T_i

- ``P_i`` = b_0 .. b_i, the multiplier's first i + 1 digits: the line's own digit b_i is the last one, at index
  i + 1 within the run, where it sits at the index of the prompt's b_i (a copy local in digit index);
- ``L_i`` = b_i as a letter, ``a``..``j`` for 0..9 (``A``..``J`` on the last line): a letter is not a digit, so
  every token of the line sees it through the row window (model.row_window), and the capital says "last line";
- ``T_i`` = a * b_i + floor(T_{i-1} / 10) (T_{-1} = 0), n + 1 digits, zero-padded: digit k needs a_k and a_{k-1},
  T_{i-1}'s digits k + 1 and k, and the digit before it, all within 2 indices of its own.

Lines are separated by ``,``; EOS follows the last. T_i's lowest digit is digit i of the product, which is final
once written; the product is T_0[0] .. T_{m-1}[0] followed by T_{m-1}[1..n]. 12 x 34 (``21x43=``):
``4e840,43D040``: T_0 = 2 x 4 = 48, T_1 = 12 x 3 + 4 = 40, product 408.
"""

from __future__ import annotations

import re

import numpy as np

from arith.data.spec import digit_tokens
from arith.data.tokenizer import LABELS

LOWER, UPPER = LABELS[:10], LABELS[25:35]  # 'a'..'j' and 'A'..'J' (LABELS skips 'x', which is past 'j')
assert LOWER == "abcdefghij" and UPPER == "ABCDEFGHIJ"


def lines(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """T_0 .. T_{wb-1}, each (N, wa + 1) uint8 digits (rows with fewer multiplier digits carry on with b_i = 0:
    their lines past lb are never written)."""
    n, wa = a.shape
    a32 = a.astype(np.int32)
    prev = np.zeros((n, wa + 1), dtype=np.int32)
    out = []
    for i in range(b.shape[1]):
        col = np.zeros((n, wa + 1), dtype=np.int32)
        col[:, :wa] = a32 * b[:, i : i + 1].astype(np.int32)
        col[:, :-1] += prev[:, 1:]  # floor(T_{i-1} / 10): shifted one digit down
        t = np.empty((n, wa + 1), dtype=np.int32)
        carry = np.zeros(n, dtype=np.int32)
        for k in range(wa + 1):
            carry, t[:, k] = np.divmod(col[:, k] + carry, 10)
        out.append(t.astype(np.uint8))
        prev = t
    return out


def segments(tok, a, la, b, lb, dtype) -> list:
    """The scratchpad's (tokens, lens) segments for `digits.assemble`, after the prompt's '='."""
    n = len(a)
    t_lines = lines(a, b)
    lower = np.asarray([tok.vocab[c] for c in LOWER], dtype=dtype)
    upper = np.asarray([tok.vocab[c] for c in UPPER], dtype=dtype)
    b_tokens = digit_tokens(tok, b, dtype)
    comma = np.full((n, 1), tok.comma_id, dtype=dtype)
    segs = []
    for i in range(b.shape[1]):
        on = lb > i
        last = lb == i + 1
        letter = np.where(last, upper[b[:, i]], lower[b[:, i]])[:, None]
        segs += [
            (b_tokens[:, : i + 1], np.where(on, i + 1, 0)),
            (letter, on.astype(np.int64)),
            (digit_tokens(tok, t_lines[i], dtype), np.where(on, la + 1, 0)),
            (comma, (lb > i + 1).astype(np.int64)),
        ]
    return segs


def length(a_len: int, b_len: int) -> int:
    """Tokens after '=' (EOS included): m lines of i + 1 + 1 + n + 1 tokens, m - 1 commas, EOS."""
    n, m = a_len, b_len
    return m * (m + 1) // 2 + m * (n + 2) + m


def text(a: int, b: int) -> str:
    """The scratchpad of a x b as the model writes it (after '=', before EOS), from Python ints."""
    ra, rb = str(a)[::-1], str(b)[::-1]
    n, out, prev = len(ra), [], 0
    for i, d in enumerate(rb):
        t = a * int(d) + prev // 10
        letter = (UPPER if i == len(rb) - 1 else LOWER)[int(d)]
        out.append(rb[: i + 1] + letter + str(t).zfill(n + 1)[::-1])
        prev = t
    return ",".join(out)


_LINE = re.compile(r"([0-9]+)([a-jA-J])([0-9]+)")


def parse(work: str) -> tuple[list[tuple[str, str, str]], bool] | None:
    """The lines (P, L, T) of a written scratchpad and whether the last is marked last; None when malformed."""
    parts = work.split(",")
    got = [_LINE.fullmatch(p) for p in parts]
    if any(m is None for m in got):
        return None
    return [m.groups() for m in got], got[-1].group(2).isupper()


def product(work: str) -> str | None:
    """The natural-order product a scratchpad spells (its lines' lowest digits, then the last line), or None."""
    parsed = parse(work)
    if parsed is None:
        return None
    rows, _ = parsed
    digits = "".join(t[0] for _, _, t in rows) + rows[-1][2][1:]
    return digits[::-1].lstrip("0") or "0"


def describe(work: str) -> str:
    """The steps in words (`solve(..., show_work=True)`)."""
    parsed = parse(work)
    if parsed is None:
        return work
    steps = []
    for i, (_, letter, t) in enumerate(parsed[0]):
        d = LOWER.index(letter.lower())
        steps.append(f"T{i} = a x {d}" + (f" + T{i - 1} // 10" if i else "") + f" = {t[::-1]}")
    return "; ".join(steps) + f"; answer {product(work)}"
