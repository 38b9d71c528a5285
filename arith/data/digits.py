"""Vectorized arithmetic on digit arrays, the operand hash, and token-matrix assembly.

A batch of numbers is a ``(N, W)`` ``uint8`` array, least-significant digit first, zero beyond each number's
length (lengths travel alongside as ``(N,)`` int arrays). Numbers of 100+ digits do not fit in int64, so every
operation works column by column over the whole batch: the Python loops run over digit positions (at most a
few hundred), never over examples.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------- numbers


def random_digits(rng: np.random.Generator, lens: np.ndarray, width: int) -> np.ndarray:
    """Uniform numbers with exactly ``lens`` digits (leading digit non-zero; a 1-digit number may be 0)."""
    n = len(lens)
    d = rng.integers(0, 10, size=(n, width), dtype=np.uint8)
    d *= np.arange(width)[None, :] < lens[:, None]
    lead = rng.integers(1, 10, size=n, dtype=np.uint8)
    rows = np.flatnonzero(lens > 1)
    d[rows, lens[rows] - 1] = lead[rows]
    return d


def num_len(d: np.ndarray) -> np.ndarray:
    """Digits of each number without leading zeros (0 has length 1)."""
    nz = d != 0
    last = d.shape[1] - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(axis=1), last, 1)


def widen(a: np.ndarray, width: int) -> np.ndarray:
    if a.shape[1] >= width:
        return a
    return np.pad(a, ((0, 0), (0, width - a.shape[1])))


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b, width max(Wa, Wb) + 1."""
    w = max(a.shape[1], b.shape[1])
    s = widen(a, w) + widen(b, w)  # (N, w), each column 0..18
    out = np.empty((len(a), w + 1), dtype=np.uint8)
    carry = np.zeros(len(a), dtype=np.uint8)
    for k in range(w):
        v = s[:, k] + carry
        carry = (v >= 10).astype(np.uint8)
        out[:, k] = v - 10 * carry
    out[:, w] = carry
    return out


def less_than(a: np.ndarray, la: np.ndarray, b: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """a < b for numbers without leading zeros: by length, then by the most significant differing digit."""
    w = max(a.shape[1], b.shape[1])
    diff = widen(a, w).astype(np.int16) - widen(b, w)
    nz = diff != 0
    top = w - 1 - np.argmax(nz[:, ::-1], axis=1)  # most significant differing column
    first = diff[np.arange(len(a)), top]
    return (la < lb) | ((la == lb) & (first < 0))


def subtract(a: np.ndarray, la: np.ndarray, b: np.ndarray, lb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a - b as (magnitude digits, negative flag)."""
    w = max(a.shape[1], b.shape[1])
    a, b = widen(a, w), widen(b, w)
    neg = less_than(a, la, b, lb)
    big = np.where(neg[:, None], b, a)
    small = np.where(neg[:, None], a, b)
    out = np.empty_like(big)
    borrow = np.zeros(len(a), dtype=np.int16)
    for k in range(w):
        v = big[:, k].astype(np.int16) - small[:, k] - borrow
        borrow = (v < 0).astype(np.int16)
        out[:, k] = v + 10 * borrow
    return out, neg


def complement(d: np.ndarray) -> np.ndarray:
    """10^W - d modulo 10^W (the ten's complement over the array's W digits; 0 stays 0)."""
    out = np.empty_like(d)
    borrow = np.zeros(len(d), dtype=np.int16)
    for k in range(d.shape[1]):
        v = -d[:, k].astype(np.int16) - borrow
        borrow = (v < 0).astype(np.int16)
        out[:, k] = v + 10 * borrow
    return out


def multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b by digit convolution then carries, width Wa + Wb."""
    n, wa = a.shape
    wb = b.shape[1]
    col = np.zeros((n, wa + wb), dtype=np.int32)  # column sums <= 81 * min(wa, wb)
    b32 = b.astype(np.int32)
    for i in range(wa):
        col[:, i : i + wb] += a[:, i : i + 1] * b32
    out = np.empty((n, wa + wb), dtype=np.uint8)
    carry = np.zeros(n, dtype=np.int32)
    for k in range(wa + wb):
        carry, out[:, k] = np.divmod(col[:, k] + carry, 10)
    return out


def limbs(d: np.ndarray, size: int = 18) -> list[np.ndarray]:
    """Split numbers (..., W) into int64 limbs of `size` digits, least significant limb first (for sorting)."""
    out = []
    for lo in range(0, d.shape[-1], size):
        limb = np.zeros(d.shape[:-1], dtype=np.int64)
        for k in range(min(d.shape[-1], lo + size) - 1, lo - 1, -1):  # Horner, most significant first
            limb *= 10
            limb += d[..., k]
        out.append(limb)
    return out


# ---------------------------------------------------------------- hash (train / eval split)

PRIME = 2**31 - 1  # Mersenne prime: products digit * power stay far below 2**63
_BASE_ITEM, _BASE_DIGIT, _BASE_LEN = 1_000_003, 7_919, 104_729
_tables: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _powers(items: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """pw[i, k] = B_item^(i+1) * B_digit^(k+1) mod P and pl[i] = B_len^(i+1) mod P.

    They depend only on (item, digit position), so a number hashes the same whatever width its batch has.
    """
    key = (items, width)
    if key not in _tables:
        pi = [pow(_BASE_ITEM, i + 1, PRIME) for i in range(items)]
        pd = [pow(_BASE_DIGIT, k + 1, PRIME) for k in range(width)]
        pw = np.array([[x * y % PRIME for y in pd] for x in pi], dtype=np.int64)
        pl = np.array([pow(_BASE_LEN, i + 1, PRIME) for i in range(items)], dtype=np.int64)
        _tables[key] = (pw, pl)
    return _tables[key]


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the polynomial hash so that `% 50` is well mixed even in tiny cells."""
    x = h.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def operand_hash(digits: np.ndarray, lens: np.ndarray, count: np.ndarray | None = None) -> np.ndarray:
    """Hash of M numbers per example: digits (N, M, W), lens (N, M) (0 = absent item), count (N,) or None.

    h = count * C + sum_i len_i * B_len^(i+1) + sum_{i,k} d_ik * B_item^(i+1) * B_digit^(k+1)  (mod P),
    then mixed to 64 bits. Digits beyond a number's length are zero, so padding never changes the hash.
    """
    n, m, w = digits.shape
    pw, pl = _powers(m, w)
    h = np.zeros(n, dtype=np.int64)
    for i in range(m):
        for k in range(w):
            h += digits[:, i, k] * pw[i, k]
        h += lens[:, i].astype(np.int64) * pl[i]
        h %= PRIME
    if count is not None:
        h = (h + count.astype(np.int64) * _BASE_LEN) % PRIME
    return _mix(h)


# ---------------------------------------------------------------- token matrices


def write_shifted(ids: np.ndarray, start: np.ndarray, block: np.ndarray) -> None:
    """ids[r, start[r] : start[r] + w] = block[r] for every row, grouping rows by start (few distinct values)."""
    w = block.shape[1]
    lo, hi = int(start.min()), int(start.max())
    if lo == hi:
        ids[:, lo : lo + w] = block
        return
    small = np.int16 if hi < 2**15 else np.int64  # 16-bit keys get numpy's radix sort
    order = np.argsort(start.astype(small), kind="stable")
    s_sorted = start[order]
    cuts = np.flatnonzero(np.diff(s_sorted)) + 1
    for rows in np.split(order, cuts):
        s = int(start[rows[0]])
        ids[rows, s : s + w] = block[rows]


def assemble(segments: list, n: int, pad_id: int, dtype) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Concatenate per-row token segments into a right-padded matrix.

    segments: (tokens, lens) pairs, left to right; tokens is a scalar id or an (N, w) id matrix, lens is None
    (length 1), or an (N,) array of lengths <= w. A block is written at full width w: the part beyond a row's
    length is junk that the next segments (or the final PAD fill) overwrite, which keeps every write a
    contiguous slice. Returns (ids (N, T), length (N,), start of each segment (N,)).
    """
    widths = [1 if np.isscalar(t) else t.shape[1] for t, _ in segments]
    total = np.zeros(n, dtype=np.int64)
    starts = []
    for _t, lens in segments:
        starts.append(total.copy())
        total += 1 if lens is None else lens
    t_max = int(total.max()) if n else 0
    ids = np.empty((n, t_max + max(widths)), dtype=dtype)
    rows = np.arange(n)
    for (tokens, _), start in zip(segments, starts):
        if np.isscalar(tokens):
            ids[rows, start] = tokens
        else:
            write_shifted(ids, start, tokens)
    ids = ids[:, :t_max]
    ids[np.arange(t_max)[None, :] >= total[:, None]] = pad_id
    return ids, total, starts
