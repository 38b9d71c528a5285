"""model.length_relative: the length feature reads 1 + L_max - L, L_max the row's longest number, in place of L.
The lengths are the row's own (the prompt's numbers, never the answer's); a row whose numbers are all longer by
the same count reads the same feature; off is the length feature exactly; cached and left-padded decoding
(where the longest number is in the cache's history) equal the full forward; bad settings are one-line errors."""

import math

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.model.numbers import number_lengths, relative_lengths
from tests.test_model import cfg_for
from tests.test_opener_embedding import assert_decoding_equals_the_full_forward

TOK = ArithTokenizer.build()
ROW = "503:a,7:b,14:c=b,c,a"  # sorting, label_last: 305, 7, 41


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_each_length_is_read_against_the_rows_longest():
    model = build_model(cfg_for(length_feature=True), TOK)
    got = relative_lengths(number_lengths(ids_of(ROW), model.digit_lut, TOK.eq_id))[0].tolist()
    #       5  0  3  :  a  ,  7  :  b  ,  1  4  :  c  =  b  ,  c  ,  a
    want = [0, 0, 0, 1, 1, 1, 0, 3, 3, 3, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0]
    assert got == want
    # in a batch each row reads its own longest (a left PAD reads nothing); a row of no number reads nothing
    two = torch.tensor([[TOK.pad_id, *TOK.encode("12:a,3:b")], TOK.encode("1:a,234:b")])
    assert relative_lengths(number_lengths(two, model.digit_lut, TOK.eq_id)).tolist() == [
        [0, 0, 0, 1, 1, 1, 0, 2, 2],
        [0, 3, 3, 3, 0, 0, 0, 1, 1],
    ]
    assert relative_lengths(torch.zeros(1, 3, dtype=torch.long)).tolist() == [[0, 0, 0]]


def test_longer_rows_read_the_same_feature_and_log_codes_it():
    torch.manual_seed(0)
    model = build_model(cfg_for(length_feature=True, length_relative=True), TOK).eval()
    vec = model.length_emb.weight[:, 0]
    short, long = model.embed(ids_of("33:a,3:b"), k=0), model.embed(ids_of("333333:a,33333:b"), k=0)
    assert torch.equal(short[0, 2:5], long[0, 6:9])  # the longest's ':', 'a', ',' (non-digits: Abacus row 0)
    assert torch.equal(short[0, -2:], long[0, -2:])  # one digit shorter, in both rows
    base = build_model(cfg_for(length_feature=True), TOK).eval()
    base.load_state_dict(model.state_dict())
    got = model.embed(ids_of(ROW), k=0)[0] - base.embed(ids_of(ROW), k=0)[0]
    label = ROW.index("7:b") + 2  # 7's label: L = 1 in a row whose longest has 3 digits reads 3
    assert torch.allclose(got[label], (math.log(4) - math.log(2)) * vec, atol=1e-6)
    assert torch.equal(got[ROW.index("=") :], torch.zeros_like(got[ROW.index("=") :]))  # the answer: nothing


def test_off_is_the_length_feature_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire", length_feature=True), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", length_feature=True, length_relative=False), TOK).eval()
    assert torch.equal(before(ids_of(ROW)), off(ids_of(ROW)))
    assert before.state_dict().keys() == off.state_dict().keys()


@pytest.mark.parametrize("value", [0, 5], ids=["alone", "with_value_feature"])  # 5: the sorting preset's
def test_cached_and_left_padded_decoding_equal_the_full_forward(value):
    torch.manual_seed(0)
    cfg = cfg_for(
        rel_pos="fire", item_window=True, length_feature=True, length_relative=True, value_feature=value
    )
    model = build_model(cfg, TOK).eval()
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


def test_the_value_feature_adds_its_own_vector_beside_the_relative_length():
    torch.manual_seed(0)
    both = build_model(cfg_for(length_feature=True, length_relative=True, value_feature=3), TOK).eval()
    alone = build_model(cfg_for(length_feature=True, length_relative=True), TOK).eval()
    alone.load_state_dict(both.state_dict(), strict=False)  # all but the value vector
    got = both.embed(ids_of(ROW), k=0)[0] - alone.embed(ids_of(ROW), k=0)[0]
    vec = both.value_emb.weight[:, 0]
    label = ROW.index("7:b") + 2  # 7's label: m = 0.7, whatever its relative length
    assert torch.allclose(got[label], 0.7 * vec, atol=1e-6)
    assert torch.allclose(got[ROW.index("503:a") + 4], 0.305 * vec, atol=1e-6)  # 305's label
    assert torch.equal(got[ROW.index("=") :], torch.zeros_like(got[ROW.index("=") :]))  # the answer: nothing


@pytest.mark.parametrize(
    "kw, msg",
    [
        (
            dict(length_relative="yes", length_feature=True),
            r"model.length_relative='yes' must be true or false",
        ),
        (
            dict(length_relative=True),
            r"model.length_relative=true reads the length feature: set model.length_feature",
        ),
        (
            dict(length_relative=True, length_feature=True, length_offset=True),
            r"model.length_relative=true and model.length_offset=true both change",
        ),
        (
            dict(length_relative=True, length_feature=True, value_feature=3, value_in_length=True),
            r"model.length_relative=true and model.value_in_length=true both change",
        ),
    ],
)
def test_bad_settings_are_one_line(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        build_model(cfg_for(**kw), TOK)


def test_key_composes(compose):
    assert compose(["model.length_feature=true", "model.length_relative=true"]).model.length_relative is True
    assert compose([]).model.length_relative is False
