"""model.number_window: past the prompt a query sees its own number and the W numbers before it (with the
non-digits between them); the prompt is always visible. Off is today's model exactly; the mask hides what it
says; cached decoding equals the full forward; an addition row (one number after '=') is untouched; a bad value
is a one-line error; the key composes and is in the resume identity."""

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.model.attention import causal_mask
from tests.test_model import cfg_for
from tests.test_opener_embedding import cached_logits

TOK = ArithTokenizer.build()
ROW = "21x43=4e840,43D040"  # 12 x 34 in the multiplication scratchpad: a, b | P_0 e T_0 , P_1 D T_1


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_the_mask_hides_the_numbers_before_the_window():
    model = build_model(cfg_for(number_window=2, opener_embedding=True), TOK).eval()
    ids = ids_of(ROW)
    allow = model.windows(ids, None, ids.shape[1])[0, 0]  # (T, T)
    T = ids.shape[1]
    hidden = ~allow & causal_mask(T, T)
    # T_1's digits (the last three tokens) no longer see line 0's prefix digit and its letter (4, e); every
    # other earlier token stays visible: the prompt, T_0, the comma, P_1 and D
    for q in range(T - 3, T):
        assert hidden[q].nonzero().flatten().tolist() == [6, 7]
    # T_0's digits see everything before them: the prompt, P_0 and its letter
    assert not hidden[8:11].any()
    # with a window of 1, T_1 loses T_0 and the comma after it too
    one = build_model(cfg_for(number_window=1), TOK).eval().windows(ids, None, T)[0, 0]
    assert (~one & causal_mask(T, T))[T - 1].nonzero().flatten().tolist() == [6, 7, 8, 9, 10, 11]


def test_the_row_window_and_the_number_window_combine():
    ids = ids_of(ROW)
    T = ids.shape[1]
    both = build_model(cfg_for(number_window=2, row_window=1), TOK).eval().windows(ids, None, T)
    row = build_model(cfg_for(row_window=1), TOK).eval().windows(ids, None, T)
    num = build_model(cfg_for(number_window=2), TOK).eval().windows(ids, None, T)
    assert torch.equal(both, row & num) and not torch.equal(both, row) and not torch.equal(both, num)


def test_off_is_todays_model_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire", row_window=2), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", row_window=2, number_window=0), TOK).eval()
    ids = ids_of(ROW)
    assert torch.equal(before(ids), off(ids))
    assert before.state_dict().keys() == off.state_dict().keys()


def test_on_changes_scratchpad_rows_not_addition_rows():
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", layers=2), TOK).eval()
    torch.manual_seed(0)
    on = build_model(cfg_for(rel_pos="fire", layers=2, number_window=2), TOK).eval()
    add = ids_of("21+43=46")  # one number after '=': nothing to hide
    assert torch.equal(off(add), on(add))
    assert not torch.allclose(off(ids_of(ROW)), on(ids_of(ROW)))


def test_cached_decoding_equals_the_full_forward():
    torch.manual_seed(0)
    model = build_model(
        cfg_for(rel_pos="fire", row_window=2, number_window=2, opener_embedding=True), TOK
    ).eval()
    ids = ids_of(ROW)
    assert torch.allclose(cached_logits(model, ids, prompt=6), model(ids), atol=1e-5)


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.number_window=.* must be an integer >= 0"):
        build_model(cfg_for(number_window=bad), TOK)


def test_key_composes_and_is_in_the_resume_identity(compose):
    from arith.start import IDENTITY_KEYS

    assert compose(["model.number_window=2"]).model.number_window == 2
    assert compose([]).model.number_window == 0
    assert "model" in IDENTITY_KEYS  # every model key is
    with pytest.raises(Exception, match="number_windw"):
        compose(["model.number_windw=2"])
