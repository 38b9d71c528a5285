"""Answer formats (data.format): the subtraction scratchpad round-trips, the direct format is unchanged, and a
format a task does not have is a one-line error."""

import hashlib
import re

import numpy as np
import pytest

from arith.data import datasets as DS
from arith.data import tasks as T
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError

TOK = ArithTokenizer.build()
SP = T.get_task("subtraction", answer_format="scratchpad")


def _texts(spec, a_lens, b_lens, seed=0, split="train"):
    ex = spec.make(TOK, np.random.default_rng(seed), np.array(a_lens), np.array(b_lens), split=split)
    return ex, [TOK.decode(r) for r in ex.ids]


def _natural(text: str) -> tuple[int, int]:
    a, b = re.match(r"([0-9]+)-([0-9]+)=", text).groups()
    return int(a[::-1]), int(b[::-1])


def test_scratchpad_steps_are_the_true_modulus_sign_and_magnitude():
    rng = np.random.default_rng(1)
    a_lens, b_lens = rng.integers(1, 40, 3000), rng.integers(1, 40, 3000)
    ex, texts = _texts(SP, a_lens, b_lens)
    signs = set()
    for text, p, n_tok in zip(texts, ex.prompt_len, ex.length):
        x, y = _natural(text)
        n = max(len(str(x)), len(str(y)))
        raw, sign, mag, tail = re.fullmatch(r".*=([0-9]+)([+-])([0-9]+)(-?)", text).groups()
        assert raw == str((x - y) % 10**n).zfill(n)[::-1]  # borrows chained from the least significant digit
        assert sign == ("-" if x < y else "+") and tail == ("-" if x < y else "")
        assert mag == str(abs(x - y)).zfill(n)[::-1]
        assert SP.check(text)
        assert SP.answer(text.split("=")[1]) == str(x - y)  # the natural form, sign first
        assert n_tok - p == 2 * n + 2 + (x < y) <= SP.max_answer_len(len(str(x)), len(str(y)))
        signs.add(sign)
    assert signs == {"+", "-"}


@pytest.mark.parametrize(
    "a,b",
    [(12, 345), (345, 12), (7, 7), (0, 0), (1000, 999), (999, 1000), (10**30, 1), (5, 9), (2**100, 3**70)],
)
def test_scratchpad_prompt_answer_round_trip(a, b):
    prompt = SP.prompt(f"{a} - {b}")
    n = max(len(str(a)), len(str(b)))
    steps = str((a - b) % 10**n).zfill(n)[::-1] + ("-" if a < b else "+") + str(abs(a - b)).zfill(n)[::-1]
    steps += "-" if a < b else ""
    assert SP.check(prompt + steps)
    assert SP.answer(steps) == str(a - b)
    assert SP.work(steps).endswith(f"answer {a - b}")
    assert SP.prompt("12-345") == "21-543="  # the prompt is the direct format's


def test_scratchpad_check_rejects_wrong_steps():
    assert SP.check("21-543=766-333-")
    for bad in ["21-543=333-", "21-543=766+333-", "21-543=766-333", "21-543=767-333-", "21-543=766-433-"]:
        assert not SP.check(bad), bad
    assert SP.answer("garbled") == "delbrag"  # malformed output never reads as a right answer


def test_direct_format_unchanged():
    """The direct format's bytes for a fixed seed, pinned: the scratchpad did not move them."""
    direct = T.get_task("subtraction")
    assert direct is T.get_task("subtraction", answer_format="direct") is T.TASKS["subtraction"]
    ex, _ = _texts(direct, np.arange(200) % 12 + 1, np.arange(200) % 7 + 1, seed=3)
    digest = hashlib.sha256(ex.ids.tobytes() + ex.prompt_len.tobytes() + ex.length.tobytes()).hexdigest()
    assert digest[:16] == "85cfb25bc5a0e57d"  # computed at the commit before data.format existed


def test_unknown_format_for_a_task_is_one_line():
    with pytest.raises(
        ConfigError, match=r"data.format=scratchpad is not defined for addition; valid: direct"
    ):
        T.get_task("addition", answer_format="scratchpad")
    with pytest.raises(ConfigError, match="do not combine"):
        T.get_task("subtraction", pad_operands=True, answer_format="scratchpad")


def test_config_key_validated_named_and_in_the_resume_identity(compose):
    from arith.start import IDENTITY_KEYS

    cfg = compose(["data=subtraction", "data.format=scratchpad", "data.max_len=5"])
    assert cfg.data.name == "subtraction_5x5_n20000000_s0_sp"
    assert compose(["data=subtraction"]).data.name == "subtraction_20x20_n20000000_s0"  # direct: as before
    assert T.task_for(cfg.data) is SP
    assert "data.format" in IDENTITY_KEYS
    cfg = compose(["data=sorting", "data.format=label_last", "data.max_len=5", "data.max_len_b=5"])
    assert cfg.data.name.endswith("_ll") and T.task_for(cfg.data).answer_format == "label_last"
    cfg = compose(["data=sorting", "data.format=values", "data.max_len=5", "data.max_len_b=5"])
    assert cfg.data.name.endswith("_sv") and T.task_for(cfg.data).answer_format == "values"
    cfg = compose(["data=sorting", "data.format=successor", "data.max_len=5", "data.max_len_b=5"])
    assert cfg.data.name.endswith("_su") and T.task_for(cfg.data).answer_format == "successor"
    with pytest.raises(Exception, match="scratchpd"):
        compose(["data.format=scratchpd"])


def test_scratchpad_dataset_on_disk_records_its_format(compose, tmp_path):
    cfg = compose(
        [
            "data=subtraction",
            "data.format=scratchpad",
            "data.max_len=3",
            "data.n_train=2000",
            f"data.root={tmp_path}",
        ]
    ).data
    path = DS.build(cfg, progress=False)
    assert DS.json.loads((path / DS.META).read_text())["answer_format"] == "scratchpad"
    dd, _ = DS.load(cfg)
    for row in dd["train"]["input_ids"][:200]:
        assert SP.check(TOK.decode(row))
    direct = compose(
        ["data=subtraction", "data.max_len=3", "data.n_train=2000", f"data.root={tmp_path}"]
    ).data
    direct.name = cfg.name  # the same folder asked for in the direct format: refused, not misread
    with pytest.raises(Exception, match="answer_format"):
        DS.load(direct)


def test_grid_cost_counts_the_scratchpad():
    direct = T.get_task("subtraction")
    assert SP.cell_cost(8, 8) > direct.cell_cost(8, 8)
    assert SP.answer_lengths(8, 3) == (17, 18)
