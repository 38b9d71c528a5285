"""The row window (model.row_window, eval.row_window) and cyclic Abacus rows (model.row_period).

A query sees a digit key only when their indices within their numbers differ by at most the window; non-digit
keys stay visible. Off (0) is today's model exactly; a window wider than any number changes nothing; cached
decoding equals the full forward; rows wrap with the period; every bad value is a one-line error."""

import pytest
import torch
from test_train import tiny

import arith
from arith.data.spec import Cell
from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.eval.decode import generate
from arith.eval.reach import untrained_rows
from arith.model import build_model
from arith.model.attention import row_window_mask
from arith.model.positions import abacus_positions
from arith.train import train
from tests.test_decode import TOK, encode
from tests.test_model import cfg_for

IDS = encode("21+543=753", "99999+1=000001")  # reversed digits, padded to one length


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cfg_for(**kw), TOK).eval()


def test_mask_sees_digits_within_the_window_and_every_non_digit():
    ids = torch.tensor([TOK.encode("123+45=")])  # indices 1 2 3 0 1 2 0
    index = abacus_positions(torch.tensor([[c.isdigit() for c in "123+45="]]))
    assert index.tolist() == [[1, 2, 3, 0, 1, 2, 0]] and ids.shape == index.shape
    allow = row_window_mask(index, 7, 1)[0, 0]  # (7, 7)
    # query "5" (index 2, position 5): digits 1..3 are near, "+" is a non-digit, nothing after it (causal)
    assert allow[5].tolist() == [True, True, True, True, True, True, False]
    # query "4" (index 1): the first number's "3" (index 3) is 2 away
    assert allow[4].tolist() == [True, True, False, True, True, False, False]
    # query "=" (index 0) sees the digits of index 1 and every non-digit
    assert allow[6].tolist() == [True, False, False, True, True, False, True]
    # the last query of a cached step: the same row of the full mask
    assert torch.equal(row_window_mask(index, 1, 1)[0, 0, 0], allow[6])


@pytest.mark.parametrize(
    "kind",
    [
        dict(abs_pos="abacus"),
        dict(abs_pos="none", rel_pos="fire"),
        dict(abs_pos="abacus", layers=1, recurrences=3, injection="add"),
        dict(abs_pos="none", rel_pos="rerope", rerope_window=4),
    ],
    ids=lambda k: "-".join(map(str, k.values())),
)
def test_off_is_today_and_a_window_wider_than_any_number_changes_nothing(kind):
    plain, wide = build(**kind), build(row_window=50, **kind)
    narrow = build(row_window=1, **kind)
    with torch.no_grad():
        ref = plain(IDS, k=1)
        assert torch.equal(build(row_window=0, **kind)(IDS, k=1), ref)
        torch.testing.assert_close(wide(IDS, k=1), ref, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(narrow(IDS, k=1), ref, atol=1e-3)
        plain.row_window = 1  # the evaluation override: the same model, decoded with a window
        assert torch.equal(plain(IDS, k=1), narrow(IDS, k=1))


def test_cached_decoding_equals_the_full_forward():
    model = build(row_window=2, layers=1, recurrences=2, injection="add")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    prompts = encode("98765+4321=", eos=False)
    cached = generate(model, prompts, 8, TOK.eos_id, TOK.pad_id, k=2, use_cache=True)
    full = generate(model, prompts, 8, TOK.eos_id, TOK.pad_id, k=2, use_cache=False)
    assert torch.equal(cached, full)


def test_rows_wrap_with_the_period():
    model = build(row_period=6, row_window=2, max_k=5)
    ids = torch.tensor([TOK.encode("12345678+9=")])
    rows = model.abs_pos.positions(ids, 3)[0].tolist()
    # digit i at offset 3 reads 1 + (i - 1 + 3) mod 6: 4 5 6 1 2 3 4 5, then "+", then the 9 at row 4
    assert rows == [4, 5, 6, 1, 2, 3, 4, 5, 0, 4, 0]
    assert build(row_period=0).abs_pos.positions(ids, 3)[0].max() == 11


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(row_window=-1), "model.row_window=-1 must be an integer >= 0"),
        (dict(row_window=1.5), "model.row_window=1.5 must be an integer >= 0"),
        (dict(row_period=-2), "model.row_period=-2 must be an integer >= 0"),
        (dict(row_period=8, row_window=4), "model.row_period=8 must exceed 2 x model.row_window=4"),
        (dict(row_period=8, abs_pos="none"), "model.row_period=8: model.abs_pos=none has no digit rows"),
    ],
)
def test_bad_model_values_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        build(**kw)
    assert "\n" not in str(e.value)


def test_eval_settings_record_the_window_and_reject_bad_values():
    cfg = cfg_for(row_window=3, row_period=10)
    s = eval_settings.resolve(cfg, "400", "raw")
    assert s.row_window == 3 and s.columns()["row_window"] == "3" and s.tag().endswith("_win3")
    assert "row window 3" in s.describe()
    off = eval_settings.resolve(cfg, "400", "raw", row_window=0)
    assert off.tag() != s.tag() and "_win" not in off.tag() and off.columns()["row_window"] == "0"
    with pytest.raises(ConfigError, match=r"eval.row_window=-1 must be an integer >= 0"):
        eval_settings.resolve(cfg, "400", "raw", row_window=-1)
    with pytest.raises(ConfigError, match=r"eval.row_window=5 must be below model.row_period / 2 = 5"):
        eval_settings.resolve(cfg, "400", "raw", row_window=5)
    assert "row_window" in eval_settings.SETTINGS_COLUMNS


def test_trained_with_a_window_and_cyclic_rows_end_to_end(compose, tmp_path):
    """A tiny run trained with both levers: its config carries them (resume identity), it solves 3x its
    training length without an untrained-rows warning (every row is trained), and a window can be set or
    switched off at evaluation through the API."""
    levers = {"model.row_window": 2, "model.row_period": 6, "model.max_k": 5}
    cfg = tiny(compose, tmp_path, "train.steps=30", *(f"{k}={v}" for k, v in levers.items()))
    run = arith.load(train(cfg))
    assert run.cfg.model.row_window == 2 and run.cfg.model.row_period == 6
    assert run.model.row_window == 2
    answers = {}
    for window in (None, 2, 0, 1):
        answers[window] = run.solve("123456789+987654321", row_window=window)
        assert set(answers[window]) <= set("0123456789")  # 30 steps: digits, maybe none yet
        assert run.model.row_window == 2  # restored after the call
    assert answers[None] == answers[2]  # the run's own window is the default
    assert untrained_rows(run.cfg, run.tok, [Cell(9, 9), Cell(40, 40)], 5) is None
    plain = arith.load(train(tiny(compose, tmp_path, "train.steps=2", "name=plain")))
    assert "model.max_k" in untrained_rows(plain.cfg, plain.tok, [Cell(9, 9)], 5)
    with pytest.raises(ConfigError, match="row_window"):
        run.solve("1+2", row_window=3)  # 2 x 3 >= the period 6
    # both keys are part of what the run is: a resume with another value is refused
    for key, value in (("model.row_window", 1), ("model.row_period", 7)):
        changed = levers | {key: value}
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            train(tiny(compose, tmp_path, "train.steps=40", *(f"{k}={v}" for k, v in changed.items())))
