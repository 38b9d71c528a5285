"""Multiplication's scratchpad (data.format=scratchpad, `arith.data.mul_scratchpad`): every line holds the true
multiplier prefix, digit and running shift-and-add value, the product read off the lines is a * b, the vectorized
generator writes exactly the Python-made text, and the direct format's bytes did not move."""

import hashlib
import re

import numpy as np
import pytest

from arith.data import mul_scratchpad as MS
from arith.data import tasks as T
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError

TOK = ArithTokenizer.build()
SP = T.get_task("multiplication", answer_format="scratchpad")


def _lines_hold_the_true_steps(a: int, b: int, work: str) -> None:
    """Line i is b_0..b_i, b_i as a letter (capital on the last line), then T_i = a * b_i + T_{i-1} // 10."""
    ra, rb = str(a)[::-1], str(b)[::-1]
    parts = work.split(",")
    assert len(parts) == len(rb)
    prev = 0
    for i, part in enumerate(parts):
        prefix, letter, t = re.fullmatch(r"([0-9]+)([a-jA-J])([0-9]+)", part).groups()
        assert prefix == rb[: i + 1]
        assert (
            letter == "abcdefghij"[int(rb[i])].upper()
            if i == len(rb) - 1
            else letter == "abcdefghij"[int(rb[i])]
        )
        value = a * int(rb[i]) + prev // 10
        assert len(t) == len(ra) + 1 and int(t[::-1]) == value  # n + 1 digits, zero-padded
        prev = value
    low = "".join(p[-len(ra) - 1] for p in parts)  # each line's lowest digit
    assert int((low + parts[-1][-len(ra) :])[::-1]) == a * b


@pytest.mark.parametrize(
    "a,b",
    [(12, 34), (0, 0), (0, 987), (987, 0), (7, 9), (1, 1), (5, 123456), (10**20, 10**9), (2**90, 3**40)],
)
def test_scratchpad_round_trip_and_steps(a, b):
    work = MS.text(a, b)
    _lines_hold_the_true_steps(a, b, work)
    prompt = SP.prompt(f"{a} x {b}")
    assert prompt == f"{str(a)[::-1]}x{str(b)[::-1]}="  # the direct format's prompt
    assert SP.check(prompt + work)
    assert SP.answer(work) == str(a * b)
    assert SP.work(work).endswith(f"answer {a * b}")
    assert len(work) + 1 == SP.max_answer_len(len(str(a)), len(str(b)))  # EOS included


def test_random_big_ints_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(300):
        a = int(rng.integers(1, 10)) * 10 ** int(rng.integers(0, 30)) + int(rng.integers(0, 10**9))
        b = int(rng.integers(0, 10**12)) ** int(rng.integers(1, 3))
        work = MS.text(a, b)
        _lines_hold_the_true_steps(a, b, work)
        assert SP.answer(work) == str(a * b)


def test_vectorized_generator_writes_the_python_text():
    rng = np.random.default_rng(1)
    a_lens, b_lens = rng.integers(1, 25, 2000), rng.integers(1, 25, 2000)
    ex = SP.make(TOK, rng, a_lens, b_lens)
    for row, p, n in zip(ex.ids, ex.prompt_len, ex.length):
        text = TOK.decode(row[: n - 1])
        a, b = re.match(r"([0-9]+)x([0-9]+)=", text).groups()
        x, y = int(a[::-1]), int(b[::-1])
        assert text == f"{a}x{b}=" + MS.text(x, y)
        assert row[n - 1] == TOK.eos_id and n - p == SP.max_answer_len(len(a), len(b))
        assert SP.answer_lengths(len(a), len(b)) == (n - p - 1, n - p - 1)


def test_check_rejects_wrong_steps_and_malformed_output_never_reads_right():
    assert SP.check("21x43=4e840,43D040")
    for bad in [
        "21x43=804",  # the direct format
        "21x43=4e840,43d040",  # last line not marked
        "21x43=4E840,43D040",  # a middle line marked last
        "21x43=4e840,43D041",
        "21x43=4e84,43D04",  # T not padded to n + 1 digits
        "21x43=4f840,43D040",  # the letter is not b_i
        "21x43=3e840,43D040",  # the prefix is not b's
    ]:
        assert not SP.check(bad), bad
    assert SP.answer("804") == "?804" and SP.answer("4e840,,") == "?4e840,,"
    assert SP.work("garbled") == "garbled"


def test_direct_format_unchanged():
    direct = T.get_task("multiplication")
    assert direct is T.get_task("multiplication", answer_format="direct") is T.TASKS["multiplication"]
    ex = direct.make(TOK, np.random.default_rng(3), np.arange(200) % 12 + 1, np.arange(200) % 7 + 1)
    digest = hashlib.sha256(ex.ids.tobytes() + ex.prompt_len.tobytes() + ex.length.tobytes()).hexdigest()
    assert digest[:16] == "26693a94bf729c90"  # computed at the commit before the scratchpad existed
    assert direct.answer("804") == "408"


def test_format_key_names_the_dataset_and_padding_does_not_combine(compose):
    cfg = compose(["data=multiplication", "data.format=scratchpad", "data.max_len=5"])
    assert cfg.data.name.endswith("_sp") and T.task_for(cfg.data) is SP
    with pytest.raises(ConfigError, match="do not combine"):
        T.get_task("multiplication", pad_operands=True, answer_format="scratchpad")


def test_grid_cost_counts_the_scratchpad():
    direct = T.get_task("multiplication")
    assert SP.cell_cost(10, 10) > 4 * direct.cell_cost(10, 10)
    assert SP.max_answer_len(5, 5) == 55 and MS.length(15, 15) == 390
