"""Task generators: formats, exact lengths, checking, prompts, the hash split, exhaustive OR."""

import re

import numpy as np
import pytest

from arith.data import tasks as T
from arith.data.tokenizer import LABELS, ArithTokenizer
from arith.errors import ConfigError
from arith.schema import Task

TOK = ArithTokenizer.build()
PAIRS = {
    "addition": [(1, 1), (3, 7), (12, 5), (20, 20)],
    "subtraction": [(1, 1), (2, 2), (6, 3), (3, 9), (25, 25)],
    "multiplication": [(1, 1), (2, 4), (7, 7), (15, 3)],
    "sorting": [(1, 1), (1, 5), (3, 4), (10, 10), (4, len(LABELS))],
    "bitwise_or": [(1, 1), (3, 3), (2, 9), (20, 4)],
}


def _rows(task, pairs, per_pair=60, seed=0, split="train"):
    a = np.repeat([p[0] for p in pairs], per_pair)
    b = np.repeat([p[1] for p in pairs], per_pair)
    ex = T.get_task(task).make(TOK, np.random.default_rng(seed), a, b, split=split)
    return ex, a, b, [TOK.decode(r) for r in ex.ids]


def _corrupt(text: str, rng) -> str:
    """The same example with a wrong answer in the answer's own alphabet."""
    prompt, ans = text.split("=")
    if ans[0].isalpha():  # sorting: swap two labels, or name another label
        labels = ans.split(",")
        if len(labels) == 1:
            labels = [LABELS[(LABELS.index(labels[0]) + 1) % len(LABELS)]]
        else:
            i, j = rng.choice(len(labels), 2, replace=False)
            labels[i], labels[j] = labels[j], labels[i]
        return prompt + "=" + ",".join(labels)
    i = int(rng.choice([k for k, c in enumerate(ans) if c.isdigit()]))
    wrong = "1" if ans[i] == "0" else "0"  # stays a valid bit for bitwise_or
    return prompt + "=" + ans[:i] + wrong + ans[i + 1 :]


def _lengths_of(task, text):
    """(a_len, b_len) as the task defines them, read from an example's text."""
    prompt = text.split("=")[0]
    if task == "sorting":
        nums = [item.split(":")[1] for item in prompt.split(",")]
        for x in nums:
            assert len(x) == 1 or x[-1] != "0", f"leading zero in {text}"
        return max(len(x) for x in nums), len(nums)
    a, b = re.split(r"[+\-x]", prompt)
    if task != "bitwise_or":
        for x in (a, b):
            assert len(x) == 1 or x[-1] != "0", f"leading zero in {text}"
    return len(a), len(b)


def test_registry_matches_schema():
    assert set(T.TASKS) == {t.value for t in Task}
    assert T.get_task(Task.sorting) is T.TASKS["sorting"]
    with pytest.raises(ConfigError, match="addition, subtraction"):
        T.get_task("division")


@pytest.mark.parametrize("task", list(PAIRS))
def test_examples_are_correct_and_exact(task):
    spec = T.get_task(task)
    ex, a, b, texts = _rows(task, PAIRS[task])
    rng = np.random.default_rng(1)
    assert ex.ids.dtype == np.int64 and ex.ids.shape[1] == ex.length.max()
    for r, text in enumerate(texts):
        assert spec.check(text), text
        assert not spec.check(_corrupt(text, rng)), text
        assert _lengths_of(task, text) == (a[r], b[r]), text
        row, n = ex.ids[r], ex.length[r]
        assert row[n - 1] == TOK.eos_id and (row[n:] == TOK.pad_id).all()
        assert row[ex.prompt_len[r] - 1] == TOK.eq_id and TOK.eq_id not in row[: ex.prompt_len[r] - 1]
        assert n - ex.prompt_len[r] <= spec.max_answer_len(a[r], b[r])
        # tokenizer round trip: library encoder == vectorized encoder == generated row
        assert TOK.encode(text) == row[: n - 1].tolist() == TOK.encode_fast(text).tolist()


def test_sorting_labels_and_order():
    ex, _, b, texts = _rows("sorting", [(2, 6), (1, 3)], per_pair=40)
    for text in texts:
        items = text.split("=")[0].split(",")
        labels = [it[0] for it in items]
        first = LABELS.index(labels[0])
        assert labels == [LABELS[(first + i) % len(LABELS)] for i in range(len(labels))]
    assert T.TASKS["sorting"].check("a:1,b:1,c:0=c,a,b")  # ties keep their order
    assert not T.TASKS["sorting"].check("a:1,b:1,c:0=c,b,a")
    with pytest.raises(ConfigError, match="labels"):
        T.TASKS["sorting"].lengths(np.random.default_rng(0), 4, 3, len(LABELS) + 1)


def test_bitwise_or_operands():
    _, _, _, texts = _rows("bitwise_or", [(3, 3), (2, 5), (6, 1)], per_pair=80)
    hot_first_when_equal = set()
    for text in texts:
        a, rest = text.split("+")
        b, ans = rest.split("=")
        short, long_ = (a, b) if len(a) < len(b) else (b, a)
        if len(a) == len(b):
            short, long_ = (a, b) if "1" in a else (b, a)
            hot_first_when_equal.add("1" in a)
        assert short.count("1") == 1 and set(long_) == {"0"} and len(ans) == len(long_)
    assert hot_first_when_equal == {True, False}


def test_subtraction_zero_and_sign():
    spec = T.TASKS["subtraction"]
    _, _, _, texts = _rows("subtraction", [(1, 1)], per_pair=1000)
    answers = {t.split("=")[1] for t in texts}
    assert "0" in answers and "0-" not in answers and any(x.endswith("-") for x in answers)
    assert spec.check("21-543=333-") and spec.check("5-5=0") and not spec.check("5-5=0-")


def test_lengths_cover_all_pairs_uniformly():
    a, b = T.TASKS["addition"].lengths(np.random.default_rng(0), 40_000, 4, 5)
    counts = np.zeros((4, 5))
    np.add.at(counts, (a - 1, b - 1), 1)
    assert counts.min() > 0.85 * 2000 and counts.max() < 1.15 * 2000


PROBLEMS = {
    "addition": [(12, 345), (99999, 1), (0, 0), (123456789012345678901234567890, 98765)],
    "subtraction": [(12, 345), (345, 12), (7, 7), (10**30, 1)],
    "multiplication": [(12, 34), (999, 999), (0, 5), (2**70, 3**40)],
}


@pytest.mark.parametrize("task", list(PROBLEMS))
def test_prompt_answer_round_trip(task):
    spec = T.TASKS[task]
    fn = {"addition": int.__add__, "subtraction": int.__sub__, "multiplication": int.__mul__}[task]
    for a, b in PROBLEMS[task]:
        natural = str(fn(a, b))
        prompt = spec.prompt(f"{a} {spec.op} {b}")
        assert prompt == f"{str(a)[::-1]}{spec.op}{str(b)[::-1]}="
        assert spec.check(prompt + natural[::-1])
        assert spec.answer(natural[::-1]) == natural
    assert T.TASKS["addition"].prompt("12345+678") == "54321+876="
    assert T.TASKS["multiplication"].prompt("12*34") == "21x43="
    assert T.TASKS["addition"].prompt("007+3") == "7+3="


def test_prompt_sorting_and_or():
    s = T.TASKS["sorting"]
    assert s.prompt("305,7,41") == "a:503,b:7,c:14="
    assert s.check(s.prompt("305,7,41") + "b,c,a") and s.answer("b,c,a") == "b,c,a"
    o = T.TASKS["bitwise_or"]
    assert o.prompt("0010+01") == "0100+10="
    assert o.check("0100+10=1100") and o.answer("1100") == "0011"


@pytest.mark.parametrize(
    "task,problem",
    [
        ("addition", "12a+3"),
        ("addition", "+3"),
        ("addition", "12+"),
        ("addition", "12-3"),
        ("addition", "1+2+3"),
        ("addition", ""),
        ("subtraction", "-5-3"),
        ("multiplication", "12+3"),
        ("sorting", "3,,4"),
        ("sorting", "3,a"),
        ("sorting", ""),
        ("sorting", ",".join(["1"] * (len(LABELS) + 1))),
        ("bitwise_or", "0120+01"),
    ],
)
def test_malformed_problems_raise(task, problem):
    with pytest.raises(ValueError) as err:
        T.TASKS[task].prompt(problem)
    assert "\n" not in str(err.value)


def _ops_from_texts(task, texts):
    """Operands back from decoded text, in the generator's layout, to recompute the held-out hash."""
    if task == "sorting":
        items = [[it.split(":")[1] for it in t.split("=")[0].split(",")] for t in texts]
        m = max(len(x) for x in items)
        w = max(len(n) for x in items for n in x)
        dig = np.zeros((len(texts), m, w), dtype=np.uint8)
        lens = np.zeros((len(texts), m), dtype=np.int64)
        for r, x in enumerate(items):
            for i, num in enumerate(x):
                dig[r, i, : len(num)] = [int(c) for c in num]
                lens[r, i] = len(num)
        return {"dig": dig, "lens": lens, "m": np.array([len(x) for x in items])}
    pairs = [re.split(r"[+\-x]", t.split("=")[0]) for t in texts]
    out = {}
    for k, col in (("a", 0), ("b", 1)):
        nums = [p[col] for p in pairs]
        d = np.zeros((len(nums), max(map(len, nums))), dtype=np.uint8)
        for r, num in enumerate(nums):
            d[r, : len(num)] = [int(c) for c in num]
        out[k], out["l" + k] = d, np.array([len(x) for x in nums])
    return out


@pytest.mark.parametrize("task,cell", [("addition", (2, 2)), ("multiplication", (3, 4)), ("sorting", (2, 3))])
def test_eval_cells_deterministic_and_held_out(task, cell):
    spec = T.TASKS[task]
    e1 = T.eval_cell(task, TOK, *cell, n=60, seed=3)
    e2 = T.eval_cell(task, TOK, *cell, n=60, seed=3)
    assert np.array_equal(e1.ids, e2.ids)
    assert not np.array_equal(e1.ids, T.eval_cell(task, TOK, *cell, n=60, seed=4).ids)
    ev = [TOK.decode(r) for r in e1.ids]
    assert all(spec.check(t) and _lengths_of(task, t) == cell for t in ev)
    assert spec.held_out(_ops_from_texts(task, ev)).all()
    _, _, _, tr = _rows(task, [cell], per_pair=3000, seed=5)
    assert not spec.held_out(_ops_from_texts(task, tr)).any()
    assert not {t.split("=")[0] for t in ev} & {t.split("=")[0] for t in tr}
    # train examples over many cells hold no held-out example either
    ex = T.train_examples(task, TOK, np.random.default_rng(0), 3000, 6, 6)
    assert not spec.held_out(_ops_from_texts(task, [TOK.decode(r) for r in ex.ids])).any()


def test_tiny_cells_fall_back_to_plain_sampling():
    spec = T.TASKS["sorting"]
    assert not spec.splittable(1, 1)  # ten examples, none held out: train and eval both sample it plainly
    assert spec.splittable(5, 5)
    ev = [TOK.decode(r) for r in T.eval_cell("sorting", TOK, 1, 1, 20, seed=0).ids]
    assert all(spec.check(t) for t in ev)


def test_exhaustive_or():
    max_a, max_b = 7, 5
    ex = T.exhaustive_or(TOK, max_a, max_b)
    expected = sum(min(i, j) * (2 if i == j else 1) for i in range(1, max_a + 1) for j in range(1, max_b + 1))
    texts = [TOK.decode(r) for r in ex.ids]
    assert len(texts) == len(set(texts)) == expected
    assert all(T.TASKS["bitwise_or"].check(t) for t in texts)
    assert len(T.exhaustive_or(TOK, 20, 20)) == 2870 + sum(range(1, 21))


def test_eval_or_and_long_operands():
    ex = T.eval_cell("bitwise_or", TOK, 40, 40, 50, seed=0)
    assert all(T.TASKS["bitwise_or"].check(TOK.decode(r)) for r in ex.ids)
    for task, cell in (("addition", (100, 100)), ("multiplication", (40, 35)), ("subtraction", (60, 60))):
        big = T.eval_cell(task, TOK, *cell, 20, seed=0)
        assert all(T.TASKS[task].check(TOK.decode(r)) for r in big.ids)


def _sorting_lengths():
    """30 rows each of max digits x array length (1, 1), (1, 5), (3, 4), (10, 10) and (4, every label)."""
    cells = [(1, 1), (1, 5), (3, 4), (10, 10), (4, len(LABELS))]
    return np.repeat([c[0] for c in cells], 30), np.repeat([c[1] for c in cells], 30)


def test_sorting_label_last_format_is_the_direct_rows_with_each_label_moved_after_its_number():
    """data.format=label_last: the same operands, labels and answer as the direct format for the same seed; each
    item `L:n` becomes `n:L`; `check`, `prompt` and the cell read it."""
    a, b = _sorting_lengths()
    spec = T.get_task("sorting", answer_format="label_last")
    direct = T.get_task("sorting").make(TOK, np.random.default_rng(3), a, b)
    last = spec.make(TOK, np.random.default_rng(3), a, b)
    assert np.array_equal(direct.prompt_len, last.prompt_len)
    for d, r in zip(direct.ids, last.ids):
        dt, lt = TOK.decode(d), TOK.decode(r)
        prompt, ans = dt.split("=")
        moved = ",".join(f"{it[2:]}:{it[0]}" for it in prompt.split(","))
        assert lt == f"{moved}={ans}"
        assert spec.check(lt) and not T.get_task("sorting").check(lt)
    assert spec.prompt("305, 7,041") == "503:a,7:b,14:c="
    assert spec.check("1:a,1:b,0:c=c,a,b") and not spec.check("1:a,1:b,0:c=c,b,a")  # ties keep their order
    assert not spec.check("a:1,b:1,c:0=c,a,b")
    assert spec.problem_cell([3, 1, 2]) == (3, 3)
    with pytest.raises(ConfigError, match="not defined for addition"):
        T.get_task("addition", answer_format="label_last")


def test_sorting_successor_format_hints_half_the_training_rows_and_evaluates_as_label_last():
    """data.format=successor: label_last's rows, except that about half of the training rows of >= 2 numbers
    give an item (never the largest) before a second '=' and the answer goes on from its successor; evaluation
    rows, `check`, `prompt` and `answer_lengths` are label_last's."""
    a, b = _sorting_lengths()
    spec = T.get_task("sorting", answer_format="successor")
    last = T.get_task("sorting", answer_format="label_last")
    for i, j in ((3, 4), (1, 5), (10, 10)):  # evaluation cells: label_last's problems, token for token
        assert np.array_equal(
            T.eval_cell(spec, TOK, i, j, 40, 0).ids, T.eval_cell(last, TOK, i, j, 40, 0).ids
        )
    ex = spec.make(TOK, np.random.default_rng(3), a, b)
    hinted = 0
    for r, p, n, m in zip(ex.ids, ex.prompt_len, ex.length, b):
        text = TOK.decode(r)
        prompt, *given, ans = text.split("=")
        items = [it.split(":") for it in prompt.split(",")]
        ranked = [lab for _, lab in sorted(((int(v[::-1]), i), lab) for i, (v, lab) in enumerate(items))]
        assert TOK.decode(r[p:n]) == ans + TOK.decode([TOK.eos_id])  # prompt_len: where the targets start
        if given:
            hinted += 1
            assert m >= 2 and given[0] in ranked[:-1]  # one label, never the largest
            assert ans.split(",") == ranked[ranked.index(given[0]) + 1 :]
        else:
            assert spec.check(text) and ans.split(",") == ranked
    assert 0.35 < hinted / (b >= 2).sum() < 0.65, hinted
    assert spec.prompt("305, 7,041") == "503:a,7:b,14:c=" and spec.check("1:a,1:b,0:c=c,a,b")
    assert not spec.check("1:a,1:b,0:c=a=b")  # a hinted training row is not an answer
    for cell in ((1, 1), (3, 4), (5, 5)):
        assert spec.answer_lengths(*cell) == last.answer_lengths(*cell)
    with pytest.raises(ConfigError, match="data.format=successor is not defined for subtraction"):
        T.get_task("subtraction", answer_format="successor")


def test_sorting_values_format_writes_the_direct_prompts_items_in_sorted_order():
    """data.format=values: the direct format's prompt, operands and labels for the same seed; the answer is the
    prompt's items (label, ':', reversed digits) in the direct answer's label order; `answer` returns the labels,
    `check` reads values, ties and malformed text, and a cell's rows fit `answer_lengths`."""
    a, b = _sorting_lengths()
    spec = T.get_task("sorting", answer_format="values")
    direct = T.get_task("sorting").make(TOK, np.random.default_rng(3), a, b)
    vals = spec.make(TOK, np.random.default_rng(3), a, b)
    assert np.array_equal(direct.prompt_len, vals.prompt_len)
    for d, r, al, bl, p, n in zip(direct.ids, vals.ids, a, b, vals.prompt_len, vals.length):
        dt, vt = TOK.decode(d), TOK.decode(r)
        prompt, labels = dt.split("=")
        item = dict((it[0], it) for it in prompt.split(","))
        assert vt == f"{prompt}=" + ",".join(item[lab] for lab in labels.split(","))
        assert spec.check(vt) and not T.get_task("sorting").check(vt)
        assert spec.answer(vt.split("=")[1]) == labels
        lo, hi = spec.answer_lengths(al, bl)
        assert lo <= n - p - 1 <= hi and n - p <= spec.max_answer_len(al, bl)  # EOS counted by max_answer_len
        assert r[n - 1] == TOK.eos_id
    assert spec.prompt("305, 7,041") == "a:503,b:7,c:14="
    assert spec.check("a:1,b:1,c:0=c:0,a:1,b:1")
    assert not spec.check("a:1,b:1,c:0=c:0,b:1,a:1")  # ties in the order given
    assert not spec.check("a:1,b:2=a:2,b:2")  # a value that is not its label's
    assert not spec.check("a:1,b:2=a,b")
    assert spec.answer("b:7,c:14,a:503") == "b,c,a" and spec.answer("b:7,c") == "?b:7,c"
    assert spec.work("b:7,c:41") == "b=7, c=14; answer b,c"
