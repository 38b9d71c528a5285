"""model.item_digits=W (with model.item_window): in the prompt a digit reads itself and the W - 1 digits below it,
a non-digit (':', a label) its number's top W digits. Numbers of up to W digits read exactly as with the item
window alone (so a run trained on them is today's model, and the key can be set at test time); a longer number's
label reads only its top W digits; cached decoding equals the full forward; a bad value is a one-line error.
model.hide_prompt_digits: from '=' on a query sees none of the prompt's digits (the same checks)."""

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.model.attention import causal_mask
from tests.test_model import cfg_for
from tests.test_opener_embedding import assert_decoding_equals_the_full_forward

TOK = ArithTokenizer.build()
LONG = "1234567:a,89:b=b,a"  # label_last: 7654321 (top digit 7 written last), 98


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def allow_of(text: str, **kw) -> torch.Tensor:
    ids = ids_of(text)
    return build_model(cfg_for(item_window=True, **kw), TOK).eval().windows(ids, None, ids.shape[1])[0, 0]


def seen(allow: torch.Tensor, q: int) -> list[int]:
    return allow[q].nonzero().flatten().tolist()


def test_a_label_reads_its_numbers_top_w_digits_and_a_digit_the_w_below_it():
    allow = allow_of(LONG, item_digits=3)
    # tokens 0-6 the digits 1..7 (7 the top), 7 ':', 8 'a', 9 ',', then "89:b" at 10-13
    assert seen(allow, 7) == [4, 5, 6, 7]  # ':' reads the top three digits 5, 6, 7
    assert seen(allow, 8) == [4, 5, 6, 7, 8]  # the label too, and ':'
    assert seen(allow, 9) == [4, 5, 6, 7, 8, 9]
    assert seen(allow, 6) == [4, 5, 6]  # the top digit: itself and the two below it
    assert seen(allow, 3) == [1, 2, 3]
    assert seen(allow, 1) == [0, 1]  # nothing below the lowest digit
    assert seen(allow, 13) == [10, 11, 12, 13]  # a two-digit number: its whole item, as the item window
    eq = LONG.index("=")
    T = allow.shape[0]
    assert torch.equal(allow[eq:], causal_mask(T, T)[eq:])  # '=' and the answer: every earlier token


def test_numbers_of_at_most_w_digits_read_as_with_the_item_window_alone():
    row = "503:a,7:b,14:c,99999:d=b,c,a,d"
    assert torch.equal(allow_of(row, item_digits=5), allow_of(row))
    torch.manual_seed(0)
    alone = build_model(cfg_for(rel_pos="fire", item_window=True, length_feature=True), TOK).eval()
    torch.manual_seed(0)
    both = build_model(
        cfg_for(rel_pos="fire", item_window=True, length_feature=True, item_digits=5), TOK
    ).eval()
    assert torch.equal(alone(ids_of(row)), both(ids_of(row)))
    assert alone.state_dict().keys() == both.state_dict().keys()
    assert not torch.equal(alone(ids_of(LONG)), both(ids_of(LONG)))  # 7 digits: the window acts


def test_a_long_numbers_label_does_not_depend_on_the_digits_below_the_window():
    """One pass of one layer: the label of a 7-digit number with item_digits=3 reads its top three digits only."""
    torch.manual_seed(0)
    model = build_model(
        cfg_for(rel_pos="fire", layers=1, item_window=True, length_feature=True, item_digits=3), TOK
    ).eval()
    a, b = model(ids_of("1234567:a")), model(ids_of("9999567:a"))
    assert torch.allclose(a[:, -1], b[:, -1], atol=1e-6)
    assert not torch.allclose(a[:, -1], model(ids_of("1234667:a"))[:, -1], atol=1e-4)  # the 3rd top digit


def test_item_digits_decodes_with_a_cache():
    torch.manual_seed(0)
    model = build_model(
        cfg_for(rel_pos="fire", item_window=True, length_feature=True, item_digits=3), TOK
    ).eval()
    assert_decoding_equals_the_full_forward(model, ids_of(LONG), prompt=LONG.index("=") + 1)


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_item_digits_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.item_digits=.* must be an integer >= 0"):
        build_model(cfg_for(item_window=True, item_digits=bad), TOK)


def test_item_digits_needs_the_item_window():
    with pytest.raises(ConfigError, match=r"model.item_digits=5 needs model.item_window=true"):
        build_model(cfg_for(item_digits=5), TOK)


def test_item_digits_composes(compose):
    assert compose(["model.item_digits=5", "model.item_window=true"]).model.item_digits == 5
    assert compose([]).model.item_digits == 0
    with pytest.raises(Exception, match="item_digit"):
        compose(["model.item_digit=5"])


# ------------------------------------------------------------------ model.hide_prompt_digits
def test_from_equals_on_a_query_sees_no_digit_of_the_prompt():
    row = "503:a,7:b=b,a"
    ids = ids_of(row)
    T = ids.shape[1]
    model = build_model(cfg_for(hide_prompt_digits=True), TOK).eval()
    allow = model.windows(ids, None, T)[0, 0]
    eq = row.index("=")
    digits = [0, 1, 2, 6]
    for q in range(eq, T):
        assert seen(allow, q) == [k for k in range(q + 1) if k not in digits], q
    assert torch.equal(allow[:eq], causal_mask(T, T)[:eq])  # the prompt: every earlier token
    both = build_model(cfg_for(hide_prompt_digits=True, item_window=True), TOK).eval()
    assert torch.equal(both.windows(ids, None, T)[0, 0], allow & allow_of(row))


def test_an_answer_reads_the_prompt_digits_only_through_the_labels():
    """One layer, one pass: the answer's logits then read the prompt's tokens as embedded, so with the digits hidden
    they cannot depend on them (same lengths); without, they do."""
    for hide, same in ((True, True), (False, False)):
        torch.manual_seed(0)
        model = build_model(cfg_for(layers=1, item_window=True, hide_prompt_digits=hide), TOK).eval()
        a, b = model(ids_of("503:a,7:b=b,a")), model(ids_of("999:a,2:b=b,a"))
        eq = "503:a,7:b=b,a".index("=")
        assert torch.allclose(a[:, eq:], b[:, eq:], atol=1e-6) == same
        assert not torch.allclose(a[:, :eq], b[:, :eq], atol=1e-4)  # the prompt itself reads its digits


def test_hide_prompt_digits_off_is_todays_model_and_decodes_with_a_cache():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire"), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", hide_prompt_digits=False), TOK).eval()
    assert torch.equal(before(ids_of(LONG)), off(ids_of(LONG)))
    assert off.windows(ids_of(LONG), None, 5) is None
    torch.manual_seed(0)
    on = build_model(
        cfg_for(rel_pos="fire", item_window=True, item_digits=3, hide_prompt_digits=True), TOK
    ).eval()
    assert_decoding_equals_the_full_forward(on, ids_of(LONG), prompt=LONG.index("=") + 1)


@pytest.mark.parametrize("bad", [1, "yes"])
def test_hide_prompt_digits_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.hide_prompt_digits=.* must be true or false"):
        build_model(cfg_for(hide_prompt_digits=bad), TOK)


def test_hide_prompt_digits_composes(compose):
    assert compose(["model.hide_prompt_digits=true"]).model.hide_prompt_digits is True
    assert compose([]).model.hide_prompt_digits is False


# ------------------------------------------------------------------ model.length_code
def test_length_code_log_is_todays_model_and_linear_reads_l_over_10():
    torch.manual_seed(0)
    before = build_model(cfg_for(length_feature=True), TOK).eval()
    torch.manual_seed(0)
    log = build_model(cfg_for(length_feature=True, length_code="log"), TOK).eval()
    ids = ids_of(LONG)
    assert torch.equal(before(ids), log(ids))
    torch.manual_seed(0)
    linear = build_model(cfg_for(length_feature=True, length_code="linear"), TOK).eval()
    assert linear.state_dict().keys() == log.state_dict().keys()
    w = linear.length_emb.weight[:, 0]  # (width,)
    got = linear.embed(ids, k=0) - log.embed(ids, k=0)  # the same weights: only the code differs
    colon = LONG.index(":")  # after the 7-digit number: L = 7
    assert torch.allclose(got[0, colon], w * (0.7 - torch.log1p(torch.tensor(7.0))), atol=1e-6)
    assert torch.equal(got[0, :colon], torch.zeros_like(got[0, :colon]))  # digits read no length


def test_length_code_bad_value_is_one_line():
    with pytest.raises(ConfigError, match=r"model.length_code='cube' unknown; valid: log, linear"):
        build_model(cfg_for(length_feature=True, length_code="cube"), TOK)
    with pytest.raises(ConfigError, match=r"model.length_code=linear codes the length feature"):
        build_model(cfg_for(length_code="linear"), TOK)


def test_length_code_composes(compose):
    assert str(compose(["model.length_code=linear"]).model.length_code) == "linear"
    assert str(compose([]).model.length_code) == "log"
    with pytest.raises(Exception, match="cube"):
        compose(["model.length_code=cube"])
