"""model.value_feature=n: every non-digit of the prompt adds m times one learned vector, m = 0.d1...dn the top n
digits of the number just before it. The digits read are the prompt's top ones (operands are reversed: the last
written); off is today's model exactly; cached and left-padded decoding equal the full forward; a bad value is a
one-line error; the key composes."""

import math

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.model.numbers import number_tops
from tests.test_model import cfg_for
from tests.test_opener_embedding import assert_decoding_equals_the_full_forward

TOK = ArithTokenizer.build()
ROW = "503:a,7:b,14:c=b,c,a"  # sorting, label_last: 305, 7, 41


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_each_prompt_non_digit_reads_the_top_digits_of_the_number_before_it():
    model = build_model(cfg_for(value_feature=2), TOK)
    got = number_tops(ids_of(ROW), model.digit_lut, model.digit_value, TOK.eq_id, 2)[0]
    #       5  0  3  :    a    ,    7  :    b    ,    1  4  :     c     =  b  ,  c  ,  a
    want = [0, 0, 0, 0.3, 0.3, 0.3, 0, 0.7, 0.7, 0.7, 0, 0, 0.41, 0.41, 0, 0, 0, 0, 0, 0]
    torch.testing.assert_close(got, torch.tensor(want))
    three = number_tops(ids_of(ROW), model.digit_lut, model.digit_value, TOK.eq_id, 3)[0]
    assert three[3].item() == pytest.approx(0.305) and three[7].item() == pytest.approx(0.7)
    # addition: '+' reads the first operand (123 reversed: 321); '=' and the answer nothing; a left PAD nothing
    padded = torch.tensor([[TOK.pad_id, *TOK.encode("123+45=861")]])
    tops = number_tops(padded, model.digit_lut, model.digit_value, TOK.eq_id, 3)[0]
    assert tops[4].item() == pytest.approx(0.321) and tops.count_nonzero().item() == 1


def test_the_feature_is_the_top_digits_along_one_learned_vector():
    torch.manual_seed(0)
    model = build_model(cfg_for(value_feature=3), TOK).eval()
    vec = model.value_emb.weight[:, 0]
    low, high = model.embed(ids_of("003:a"), k=0), model.embed(ids_of("009:a"), k=0)  # 300 and 900
    # the label 'a' differs only by its number's top digit: 0.9 - 0.3 along the vector (lengths are equal)
    assert torch.allclose(high[0, -1] - low[0, -1], 0.6 * vec, atol=1e-6)
    # a digit below the top n changes nothing at the label
    same = model.embed(ids_of("1003:a"), k=0)[0, -1] - model.embed(ids_of("9003:a"), k=0)[0, -1]
    assert torch.allclose(same, torch.zeros_like(same))


def test_off_is_todays_model_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire", length_feature=True), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", length_feature=True, value_feature=0), TOK).eval()
    ids = ids_of(ROW)
    assert torch.equal(before(ids), off(ids))
    assert before.state_dict().keys() == off.state_dict().keys() and off.value_emb is None
    assert dict(before.named_buffers()).keys() == dict(off.named_buffers()).keys()


def test_cached_and_left_padded_decoding_equal_the_full_forward():
    torch.manual_seed(0)
    cfg = cfg_for(rel_pos="fire", item_window=True, length_feature=True, value_feature=5)
    model = build_model(cfg, TOK).eval()
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


@pytest.mark.parametrize("bad", [-1, 8, True, 1.5, "yes"])
def test_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.value_feature=.* must be an int 0-7"):
        build_model(cfg_for(value_feature=bad), TOK)


def test_key_composes(compose):
    assert compose(["model.value_feature=5"]).model.value_feature == 5
    assert compose([]).model.value_feature == 0
    with pytest.raises(Exception, match="value_featur"):
        compose(["model.value_featur=5"])
    with pytest.raises(Exception, match="value_feature"):
        compose(["model.value_feature=yes"])


# ------------------------------------------------------------------ model.value_in_length: log(1 + L + 0.d1...dn)
def test_in_the_length_a_label_reads_log1p_of_length_plus_its_top_digits():
    torch.manual_seed(0)
    model = build_model(cfg_for(length_feature=True, value_feature=3, value_in_length=True), TOK).eval()
    assert model.value_emb is None  # no vector of its own
    vec = model.length_emb.weight[:, 0]
    low, high = model.embed(ids_of("003:a"), k=0), model.embed(ids_of("0001:a"), k=0)  # 300 and 1000
    # 300 reads log(1 + 3 + 0.3), 1000 log(1 + 4 + 0.1): larger, as the value is
    assert torch.allclose(high[0, -1] - low[0, -1], (math.log(5.1) - math.log(4.3)) * vec, atol=1e-6)


def test_in_the_length_with_the_offset_and_decoding():
    torch.manual_seed(0)
    cfg = cfg_for(
        rel_pos="fire",
        item_window=True,
        length_feature=True,
        length_offset=True,
        value_feature=5,
        value_in_length=True,
    )
    model = build_model(cfg, TOK).eval()
    vec = model.length_emb.weight[:, 0]
    diff = model.embed(ids_of("003:a"), k=2)[0, -1] - model.embed(ids_of("003:a"), k=0)[0, -1]
    assert torch.allclose(diff, (math.log(1 + 3 + 2 + 0.3) - math.log(1 + 3 + 0.3)) * vec, atol=1e-6)
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


@pytest.mark.parametrize(
    "kw",
    [dict(value_in_length=True, length_feature=True), dict(value_in_length=True, value_feature=3)],
    ids=["no_value_feature", "no_length_feature"],
)
def test_in_the_length_needs_both_features(kw):
    with pytest.raises(ConfigError, match="model.value_in_length=true adds the top digits"):
        build_model(cfg_for(**kw), TOK)
    with pytest.raises(ConfigError, match="model.value_in_length=.* must be true or false"):
        build_model(cfg_for(value_in_length=1), TOK)


def test_in_the_length_composes(compose):
    assert compose(["model.value_in_length=true"]).model.value_in_length is True
    assert compose([]).model.value_in_length is False


# ------------------------------------------------------------------ model.value_vector: m in the length and its own vector
def test_both_the_length_and_a_vector_of_its_own():
    torch.manual_seed(0)
    kw = dict(length_feature=True, value_feature=3, value_in_length=True)
    model = build_model(cfg_for(value_vector=True, **kw), TOK).eval()
    length_vec, value_vec = model.length_emb.weight[:, 0], model.value_emb.weight[:, 0]
    low, high = model.embed(ids_of("003:a"), k=0), model.embed(ids_of("0001:a"), k=0)  # 300 and 1000
    # the length reads log(1 + L + m) and m adds its own vector: 300 (L 3, m 0.3) against 1000 (L 4, m 0.1)
    want = (math.log(5.1) - math.log(4.3)) * length_vec + (0.1 - 0.3) * value_vec
    assert torch.allclose(high[0, -1] - low[0, -1], want, atol=1e-6)
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


def test_value_vector_only_with_the_length_and_a_bool():
    with pytest.raises(ConfigError, match="model.value_vector=true keeps the top digits' own vector"):
        build_model(cfg_for(length_feature=True, value_feature=3, value_vector=True), TOK)
    with pytest.raises(ConfigError, match="model.value_vector=.* must be true or false"):
        build_model(cfg_for(value_vector="yes"), TOK)


def test_value_vector_off_keeps_the_length_only_model(compose):
    torch.manual_seed(0)
    kw = dict(length_feature=True, value_feature=3, value_in_length=True)
    assert build_model(cfg_for(value_vector=False, **kw), TOK).value_emb is None
    assert compose(["model.value_vector=true"]).model.value_vector is True
    assert compose([]).model.value_vector is False
