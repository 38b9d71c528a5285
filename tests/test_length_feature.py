"""model.length_feature: every non-digit of the prompt adds log(1 + L) times one learned vector, L the digit count
of the number just before it. Off is today's model exactly; the lengths are the ones the prompt holds (never the
answer's, never a digit's); the feature is what changes between two numbers that differ only in length; cached and
left-padded decoding equal the full forward; a bad value is a one-line error; the key composes."""

import math

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.model.numbers import number_lengths
from tests.test_model import cfg_for
from tests.test_opener_embedding import assert_decoding_equals_the_full_forward

TOK = ArithTokenizer.build()
ROW = "503:a,7:b,14:c=b,c,a"  # sorting, label_last: 305, 7, 41


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_each_prompt_non_digit_reads_the_length_of_the_number_before_it():
    model = build_model(cfg_for(length_feature=True), TOK)
    got = number_lengths(ids_of(ROW), model.digit_lut, TOK.eq_id)[0].tolist()
    #       5  0  3  :  a  ,  7  :  b  ,  1  4  :  c  =  b  ,  c  ,  a
    want = [0, 0, 0, 3, 3, 3, 0, 1, 1, 1, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0]
    assert got == want
    # addition: '+' follows the first operand, '=' and the answer read nothing; a PAD before any number reads 0
    padded = torch.tensor([[TOK.pad_id, *TOK.encode("123+45=861")]])
    assert number_lengths(padded, model.digit_lut, TOK.eq_id)[0].tolist() == [0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0]


def test_the_feature_is_log1p_of_the_length_along_one_learned_vector():
    torch.manual_seed(0)
    model = build_model(cfg_for(length_feature=True), TOK).eval()
    vec = model.length_emb.weight[:, 0]
    short, long = model.embed(ids_of("3:a"), k=0), model.embed(ids_of("333:a"), k=0)
    # the label 'a' differs only by its number's length: log(1 + 3) - log(1 + 1) along the vector
    assert torch.allclose(long[0, -1] - short[0, -1], (math.log(4) - math.log(2)) * vec, atol=1e-6)
    assert not torch.allclose(model(ids_of("3:a"))[0, -1], model(ids_of("333:a"))[0, -1], atol=1e-4)


def test_off_is_todays_model_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire"), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", length_feature=False), TOK).eval()
    ids = ids_of(ROW)
    assert torch.equal(before(ids), off(ids))
    assert before.state_dict().keys() == off.state_dict().keys() and off.length_emb is None


def test_cached_and_left_padded_decoding_equal_the_full_forward():
    torch.manual_seed(0)
    model = build_model(cfg_for(rel_pos="fire", item_window=True, length_feature=True), TOK).eval()
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.length_feature=.* must be true or false"):
        build_model(cfg_for(length_feature=bad), TOK)


def test_key_composes_and_is_in_the_resume_identity(compose):
    from arith.start import IDENTITY_KEYS

    assert compose(["model.length_feature=true"]).model.length_feature is True
    assert compose([]).model.length_feature is False
    assert "model" in IDENTITY_KEYS  # every model key is
    with pytest.raises(Exception, match="length_featre"):
        compose(["model.length_featre=true"])


# ------------------------------------------------------------------ model.length_offset: L + k, k the Abacus offset
def test_with_the_offset_a_label_reads_its_length_plus_k():
    torch.manual_seed(0)
    model = build_model(cfg_for(length_feature=True, length_offset=True), TOK).eval()
    # a label is a non-digit (Abacus row 0 whatever k): 1 digit at k = 2 reads what 3 digits read at k = 0
    assert torch.allclose(model.embed(ids_of("3:a"), k=2)[0, -1], model.embed(ids_of("333:a"), k=0)[0, -1])
    vec = model.length_emb.weight[:, 0]
    short, long = model.embed(ids_of("3:a"), k=4), model.embed(ids_of("333:a"), k=4)
    assert torch.allclose(long[0, -1] - short[0, -1], (math.log(8) - math.log(6)) * vec, atol=1e-6)
    # digits and the answer read no length, so the offset moves nothing there
    base = build_model(cfg_for(length_feature=True), TOK).eval()
    base.load_state_dict(model.state_dict())
    ids = ids_of(ROW)
    digits = torch.tensor([not ch.isalpha() and ch not in ":," for ch in ROW])  # digits, '=' and after it ...
    digits[ROW.index("=") :] = True  # ... the answer
    assert torch.equal(model.embed(ids, k=3)[0, digits], base.embed(ids, k=3)[0, digits])


def test_per_example_offsets_shift_each_row_by_its_own_k():
    torch.manual_seed(0)
    model = build_model(cfg_for(length_feature=True, length_offset=True), TOK).eval()
    ids = torch.cat([ids_of(ROW), ids_of(ROW)])
    both = model.embed(ids, k=torch.tensor([[1], [5]]))
    assert torch.equal(both[0], model.embed(ids_of(ROW), k=1)[0])
    assert torch.equal(both[1], model.embed(ids_of(ROW), k=5)[0])


def test_offset_off_is_the_length_feature_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire", length_feature=True), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", length_feature=True, length_offset=False), TOK).eval()
    assert torch.equal(before(ids_of(ROW), k=3), off(ids_of(ROW), k=3))


def test_cached_and_left_padded_decoding_equal_the_full_forward_with_the_offset():
    torch.manual_seed(0)
    cfg = cfg_for(rel_pos="fire", item_window=True, length_feature=True, length_offset=True, eval_k=3)
    model = build_model(cfg, TOK).eval()
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(length_offset="yes", length_feature=True), r"model.length_offset='yes' must be true or false"),
        (
            dict(length_offset=True),
            r"model.length_offset=true shifts the length feature: set model.length_feature",
        ),
        (
            dict(length_offset=True, length_feature=True, abs_pos="learned"),
            r"abs_pos=learned takes no offset",
        ),
    ],
)
def test_bad_offset_settings_are_one_line(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        build_model(cfg_for(**kw), TOK)


def test_offset_key_composes(compose):
    assert compose(["model.length_feature=true", "model.length_offset=true"]).model.length_offset is True
    assert compose([]).model.length_offset is False
