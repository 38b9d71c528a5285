"""Sorting: ``a:503,b:7,c:14=b,c,a`` (SPEC "Data formats"): labelled numbers, least-significant digit first;
the answer lists the labels in ascending order of their numbers. a_len = the most digits a number has, b_len = the
array length. Registered in `arith.data.tasks.TASKS`.

data.format=label_last writes each label after its number, ``305:a,7:b,41:c=b,c,a`` stored ``503:a,7:b,14:c=b,c,a``:
the label then follows the number's top digit (reversed digits end in it) and its length (the Abacus index of that
digit), the keys a comparison reads first, so a label token sees its own value; the answer is unchanged.

data.format=values keeps the direct prompt and writes the sorted items whole, each label with its value:
``a:503,b:7,c:14=b:7,c:14,a:503``. Each answer label then follows the value written before it (find the smallest
number past it: a successor step, the same at every array length), and its digits are a copy of the prompt's
digits under that label at the same digit index. `solve` returns the labels (``b,c,a``); the grid counts the
whole answer, values included.

data.format=successor is label_last with a task hint in training (Awasthi and Gupta 2023): half of the training
rows of two or more numbers start the answer at a given item, a random one but the largest, written before a
second '=': ``503:a,7:b,14:c=c=a`` (after 41 comes 305). The loss starts after the last '=' (`step.lm_loss`), so
the given label is not a target, and no answer position can stand for a rank: the next label is the successor
of the one before it, whatever the array's length. Evaluation, `solve` and the held-out split are label_last's.

data.close_frac=f (any format, training rows only): in a share f of the rows, the numbers have one length and share
their top digits (`_close_up`), so that neighbours in the sorted order are close in value."""

from __future__ import annotations

import re

import numpy as np

from arith.data import digits as D
from arith.data.spec import TaskSpec, clean_problem, digit_tokens, id_array
from arith.data.tokenizer import LABELS
from arith.errors import ConfigError


class Sorting(TaskSpec):
    """a_len = max digits per number, b_len = array length; labels are a cyclic run of LABELS."""

    name, op, example, eval_script = "sorting", "", "305,7,41", "sort_eval.py"
    axis_labels, lengths_alike = ("max digits", "array length"), False
    extra_columns = ("first_correct", "first_acc")
    extra_panels = {"first_acc": "first label right"}
    formats = ("direct", "label_last", "values", "successor")
    HINT_FRAC = 0.5  # successor: the share of training rows (of >= 2 numbers) that start at a given item

    def validate_lengths(self, max_a, max_b):
        super().validate_lengths(max_a, max_b)
        if max_b > len(LABELS):
            raise ConfigError(f"sorting: array length {max_b} > {len(LABELS)} labels available")

    def _sample(self, rng, a_len, b_len, wa, wb):
        n = len(a_len)
        lens = (rng.random((n, wb)) * a_len[:, None]).astype(np.int64) + 1  # uniform 1..a_len
        lens[np.arange(n), (rng.random(n) * b_len).astype(np.int64)] = a_len  # one number has a_len digits
        lens *= np.arange(wb)[None, :] < b_len[:, None]  # absent items: length 0
        dig = D.random_digits(rng, lens.ravel(), wa).reshape(n, wb, wa)
        start = rng.integers(0, len(LABELS), size=n)
        return {"dig": dig, "lens": lens, "m": b_len, "start": start}

    def _hash(self, ops):
        return D.operand_hash(ops["dig"], ops["lens"], ops["m"])

    def _draw(self, rng, a_len, b_len, split):
        ops = super()._draw(rng, a_len, b_len, split)
        if self.close_frac and split == "train":
            self._close_up(rng, ops, a_len, b_len)
        if self.answer_format == "successor" and split == "train":  # the given item's rank, -1: none
            m = ops["m"]
            rank = (rng.random(len(m)) * np.maximum(m - 1, 1)).astype(np.int64)  # 0..m-2: never the largest
            ops["hint"] = np.where((m >= 2) & (rng.random(len(m)) < self.HINT_FRAC), rank, -1)
        return ops

    def _close_up(self, rng, ops, a_len, b_len) -> None:
        """data.close_frac: in that share of the rows of >= 2 numbers and >= 2 digits, every number gets the row's
        most digits and the top P digits of the first (P uniform in 1..digits - 1), the rest drawn afresh; a row
        that would then fall in the held-out split keeps its old numbers (in place)."""
        dig, lens, m = ops["dig"], ops["lens"], ops["m"]
        rows = np.flatnonzero((m >= 2) & (a_len >= 2) & (rng.random(len(m)) < self.close_frac))
        if rows.size == 0:
            return
        _, wb, wa = dig.shape
        L = a_len[rows]
        new_lens = np.where(np.arange(wb)[None, :] < m[rows, None], L[:, None], 0)
        new = D.random_digits(rng, new_lens.ravel(), wa).reshape(len(rows), wb, wa)
        shared = (rng.random(len(rows)) * (L - 1)).astype(np.int64) + 1  # 1..L-1 top digits
        top = (np.arange(wa)[None, :] >= (L - shared)[:, None]) & (np.arange(wa)[None, :] < L[:, None])
        new = np.where(top[:, None, :] & (new_lens[:, :, None] > 0), new[:, :1, :], new)
        held = self.held_out({"dig": new, "lens": new_lens, "m": m[rows]}) & self._active(
            a_len[rows], b_len[rows]
        )
        dig[rows[~held]], lens[rows[~held]] = new[~held], new_lens[~held]

    @property
    def _label_last(self) -> bool:
        return self.answer_format in ("label_last", "successor")

    def _order(self, ops) -> np.ndarray:
        """(N, M) item indices in ascending value, ties by position, absent items last."""
        n, mmax, _ = ops["dig"].shape
        order = np.broadcast_to(np.arange(mmax), (n, mmax))
        absent = np.arange(mmax)[None, :] >= ops["m"][:, None]
        limbs = D.limbs(ops["dig"])
        limbs[-1] = np.where(absent, np.iinfo(np.int64).max, limbs[-1])
        for limb in limbs:  # least significant limb first; stable sorts make this lexicographic
            keys = np.take_along_axis(limb, order, axis=1)
            order = np.take_along_axis(order, np.argsort(keys, axis=1, kind="stable"), axis=1)
        return order

    def _tokens(self, tok, ops, dtype):
        dig, lens, m, start = ops["dig"], ops["lens"], ops["m"], ops["start"]
        n, mmax, w = dig.shape
        dig_tok = digit_tokens(tok, dig, dtype)
        labels = id_array(tok.label_ids, dtype)
        rows = np.arange(n)
        segs, items = [], []
        for i in range(mmax):
            item = np.empty((n, w + 3), dtype=dtype)
            label = labels[(start + i) % len(LABELS)]
            if self._label_last:  # digits, ':', label, ','
                item[:, :w] = dig_tok[:, i]
                item[rows, lens[:, i]] = tok.colon_id
                item[rows, lens[:, i] + 1] = label
            else:  # label, ':', digits, ','
                item[:, 0] = label
                item[:, 1] = tok.colon_id
                item[:, 2 : w + 2] = dig_tok[:, i]
            item[rows, 2 + lens[:, i]] = tok.comma_id
            last = (i == m - 1) | (i >= m)
            segs.append((item, np.where(i < m, lens[:, i] + 3 - last, 0)))
            items.append(item)
        segs.append((tok.eq_id, None))
        order = self._order(ops)
        if self.answer_format == "values":  # the prompt's items (label, ':', digits) in ascending order
            items = np.stack(items, axis=1)
            for j in range(mmax):
                last = (j == m - 1) | (j >= m)
                k = order[:, j]
                segs.append((items[rows, k], np.where(j < m, lens[rows, k] + 3 - last, 0)))
        else:
            hint = ops.get("hint", np.full(n, -1))  # successor's training rows: the answer after a given item
            if self.answer_format == "successor":
                given = np.empty((n, 2), dtype=dtype)  # the given label, then a second '='
                given[:, 0] = labels[(start + order[rows, np.maximum(hint, 0)]) % len(LABELS)]
                given[:, 1] = tok.eq_id
                segs.append((given, np.where(hint >= 0, 2, 0)))
            skip = hint + 1  # the items before the answer's first: none, or the given one and those below it
            shifted = np.take_along_axis(
                order, np.minimum(np.arange(mmax)[None] + skip[:, None], mmax - 1), 1
            )
            ans = np.full((n, 2 * mmax - 1), tok.comma_id, dtype=dtype)
            ans[:, 0::2] = labels[(start[:, None] + shifted) % len(LABELS)]
            segs.append((ans, 2 * (m - skip) - 1))
        segs.append((tok.eos_id, None))
        ids, length, starts = D.assemble(segs, n, tok.pad_id, dtype)
        first = mmax + 2 if self.answer_format == "successor" else mmax + 1  # after the given item, if any
        return ids, starts[first], length

    def cell_size(self, a_len, b_len):
        if a_len == 1:
            return 10**b_len
        return 10 ** (a_len * b_len) - 10 ** ((a_len - 1) * b_len)

    def check(self, text):
        item = r"[0-9]+:[A-Za-z]" if self._label_last else r"[A-Za-z]:[0-9]+"
        ans = rf"(?:{item},)*{item}" if self.answer_format == "values" else r"(?:[A-Za-z],)*[A-Za-z]"
        m = re.fullmatch(rf"((?:{item},)*{item})=({ans})", text)
        if m is None:
            return False
        pairs = [s.split(":") for s in m.group(1).split(",")]
        if self._label_last:
            pairs = [p[::-1] for p in pairs]
        items = [(lab, int(num[::-1])) for lab, num in pairs]
        ranked = sorted(((v, i), lab) for i, (lab, v) in enumerate(items))
        if self.answer_format == "values":  # each item as the prompt wrote it
            return m.group(2).split(",") == [pairs[i][0] + ":" + pairs[i][1] for (_, i), _ in ranked]
        return m.group(2).split(",") == [lab for _, lab in ranked]

    def prompt(self, problem):
        p = clean_problem(problem)
        if not p:
            raise ValueError("sorting: empty problem, expected comma-separated numbers like 305,7,41")
        nums = p.split(",")
        bad = [x for x in nums if not x.isdigit() or not x.isascii()]
        if bad:
            raise ValueError(
                f"sorting: expected comma-separated numbers like 305,7,41, got {bad[0]!r} in {problem!r}"
            )
        if len(nums) > len(LABELS):
            raise ValueError(f"sorting: {len(nums)} numbers, at most {len(LABELS)} (one label each)")
        nums = [x.lstrip("0") or "0" for x in nums]
        if self._label_last:
            return ",".join(f"{x[::-1]}:{LABELS[i]}" for i, x in enumerate(nums)) + "="
        return ",".join(f"{LABELS[i]}:{x[::-1]}" for i, x in enumerate(nums)) + "="

    def answer(self, reversed_answer):
        if self.answer_format != "values":
            return reversed_answer
        # the labels of `b:7,c:14,a:503`; malformed: returned as written, so it never equals a list of labels
        m = re.fullmatch(r"((?:[A-Za-z]:[0-9]+,)*[A-Za-z]:[0-9]+)", reversed_answer)
        return ",".join(s[0] for s in m.group(1).split(",")) if m else f"?{reversed_answer}"

    def work(self, reversed_answer):
        if self.answer_format != "values" or not re.fullmatch(r"(?:[A-Za-z]:[0-9]+,?)*", reversed_answer):
            return reversed_answer
        items = [s.split(":") for s in reversed_answer.split(",") if s]
        return (
            ", ".join(f"{lab}={num[::-1]}" for lab, num in items) + f"; answer {self.answer(reversed_answer)}"
        )

    def max_answer_len(self, a_len, b_len):
        if self.answer_format == "values":
            return b_len * (a_len + 3)  # b_len items: label, ':', <= a_len digits, ',' (EOS for the last)
        return 2 * b_len  # b_len labels, b_len - 1 commas, EOS

    def answer_lengths(self, a_len, b_len):
        if self.answer_format == "values":  # one number has a_len digits, the others 1..a_len
            return 4 * b_len - 1 + a_len - 1, b_len * (a_len + 3) - 1
        return 2 * b_len - 1, 2 * b_len - 1

    def cell_cost(self, a_len, b_len):
        if self.answer_format == "values":
            return float(2 * b_len * (a_len + 3)) ** 2  # the items twice: the prompt, then sorted
        return float(b_len * (a_len + 2) + 2 * b_len) ** 2  # b_len numbers with a label and separators

    def problem_cell(self, digit_runs):
        return max(digit_runs), len(digit_runs)

    def extra_results(self, result):
        return {"first_correct": result["first_correct"], "first_acc": result["first_correct"] / result["n"]}

    def describe_lengths(self, a_len, b_len):
        return f"up to {b_len} numbers of up to {a_len} digits"
