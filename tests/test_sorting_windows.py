"""model.item_window: in the prompt (before '=') a query sees only its own array item (its number and the
non-digits after it); from '=' on, every earlier token. model.answer_window=W: past the prompt a query sees the
prompt and the W tokens before it. model.prompt_window=W: in the prompt a query sees only the W tokens up to and
including itself. For each: off is today's model exactly; the mask hides what it says; what the
window hides cannot change the states (an item's, an answer step's); cached and left-padded decoding equal the
full forward; a bad value is a one-line error; the key composes and is in the resume identity."""

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.model.attention import causal_mask
from tests.test_model import cfg_for
from tests.test_opener_embedding import assert_decoding_equals_the_full_forward, cached_logits

TOK = ArithTokenizer.build()
ROW = "503:a,7:b,14:c=b,c,a"  # sorting, label_last: 305, 7, 41


def ids_of(text: str) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)])


def test_a_prompt_token_sees_only_its_own_item():
    model = build_model(cfg_for(item_window=True), TOK).eval()
    ids = ids_of(ROW)
    T = ids.shape[1]
    allow = model.windows(ids, None, T)[0, 0]
    items = [range(0, 6), range(6, 10), range(10, 14)]  # "503:a," "7:b," "14:c"
    for item in items:
        for q in item:
            assert allow[q].nonzero().flatten().tolist() == list(range(item[0], q + 1)), q
    eq = ROW.index("=")
    assert torch.equal(allow[eq:], causal_mask(T, T)[eq:])  # '=' and the answer: every earlier token


def test_each_items_states_do_not_depend_on_the_items_before_it():
    torch.manual_seed(0)
    model = build_model(cfg_for(rel_pos="fire", layers=2, item_window=True), TOK).eval()
    alone = model(ids_of("14:c"))
    after = model(ids_of("503:a,7:b,14:c"))[:, -4:]
    assert torch.allclose(alone, after, atol=1e-5)  # FIRE is relative, Abacus counts within the number
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", layers=2), TOK).eval()
    assert not torch.allclose(off(ids_of("14:c")), off(ids_of("503:a,7:b,14:c"))[:, -4:], atol=1e-3)


def test_off_is_todays_model_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire"), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", item_window=False), TOK).eval()
    ids = ids_of(ROW)
    assert torch.equal(before(ids), off(ids))
    assert before.state_dict().keys() == off.state_dict().keys()
    assert before.windows(ids, None, ids.shape[1]) is None


def test_combines_with_the_row_window():
    ids = ids_of(ROW)
    T = ids.shape[1]
    both = build_model(cfg_for(item_window=True, row_window=1), TOK).eval().windows(ids, None, T)
    row = build_model(cfg_for(row_window=1), TOK).eval().windows(ids, None, T)
    item = build_model(cfg_for(item_window=True), TOK).eval().windows(ids, None, T)
    assert torch.equal(both, row & item)


def test_cached_and_left_padded_decoding_equal_the_full_forward():
    torch.manual_seed(0)
    model = build_model(cfg_for(rel_pos="fire", item_window=True), TOK).eval()
    assert_decoding_equals_the_full_forward(model, ids_of(ROW), prompt=ROW.index("=") + 1)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.item_window=.* must be true or false"):
        build_model(cfg_for(item_window=bad), TOK)


def test_key_composes_and_is_in_the_resume_identity(compose):
    from arith.start import IDENTITY_KEYS

    assert compose(["model.item_window=true"]).model.item_window is True
    assert compose([]).model.item_window is False
    assert "model" in IDENTITY_KEYS  # every model key is
    with pytest.raises(Exception, match="item_windw"):
        compose(["model.item_windw=true"])


def test_past_the_prompt_a_query_sees_the_prompt_and_the_tokens_just_before_it():
    ids = ids_of(ROW)
    T = ids.shape[1]
    eq = ROW.index("=")
    allow = build_model(cfg_for(answer_window=1), TOK).eval().windows(ids, None, T)[0, 0]
    assert torch.equal(allow[: eq + 1], causal_mask(T, T)[: eq + 1])  # the prompt and '=': causal
    for q in range(eq + 1, T):
        assert allow[q].nonzero().flatten().tolist() == [*range(eq + 1), *range(max(eq + 1, q - 1), q + 1)], q
    both = build_model(cfg_for(answer_window=2, item_window=True), TOK).eval().windows(ids, None, T)
    item = build_model(cfg_for(item_window=True), TOK).eval().windows(ids, None, T)
    two = build_model(cfg_for(answer_window=2), TOK).eval().windows(ids, None, T)
    assert torch.equal(both, item & two) and not torch.equal(two, allow[None, None])


def test_an_answer_step_reads_only_the_step_before_it():
    """With answer_window=1 and one pass of one layer, the last step's logits are the same whatever the answer
    held before the token just before it; each further layer or recurrence reaches one window further back."""
    torch.manual_seed(0)
    model = build_model(cfg_for(rel_pos="fire", layers=1, answer_window=1), TOK).eval()
    a, b = model(ids_of("503:a,7:b,14:c=b,c,")), model(ids_of("503:a,7:b,14:c=a,c,"))
    assert torch.allclose(a[:, -1], b[:, -1], atol=1e-5) and not torch.allclose(a[:, -3], b[:, -3], atol=1e-3)
    torch.manual_seed(0)
    deeper = build_model(cfg_for(rel_pos="fire", layers=3, answer_window=1), TOK).eval()
    a, b = deeper(ids_of("503:a,7:b,14:c=b,c,")), deeper(ids_of("503:a,7:b,14:c=a,c,"))
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-7  # three layers: three tokens back
    a, b = deeper(ids_of("503:a,7:b,14:c=b,a,c,")), deeper(ids_of("503:a,7:b,14:c=a,a,c,"))
    assert torch.allclose(a[:, -1], b[:, -1], atol=1e-6)  # ... and no further


def test_answer_window_off_is_todays_model_and_decodes_with_a_cache():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire"), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", answer_window=0), TOK).eval()
    ids = ids_of(ROW)
    assert torch.equal(before(ids), off(ids))
    torch.manual_seed(0)
    on = build_model(cfg_for(rel_pos="fire", answer_window=1, item_window=True), TOK).eval()
    assert torch.allclose(cached_logits(on, ids, prompt=ROW.index("=") + 1), on(ids), atol=1e-5)


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_answer_window_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.answer_window=.* must be an integer >= 0"):
        build_model(cfg_for(answer_window=bad), TOK)


def test_answer_window_composes(compose):
    assert compose(["model.answer_window=1"]).model.answer_window == 1
    assert compose([]).model.answer_window == 0
    with pytest.raises(Exception, match="answer_windw"):
        compose(["model.answer_windw=1"])


# ------------------------------------------------------------------ model.prompt_window
def test_in_the_prompt_a_query_sees_only_the_w_tokens_up_to_itself():
    ids = ids_of(ROW)
    T = ids.shape[1]
    eq = ROW.index("=")
    allow = build_model(cfg_for(prompt_window=3), TOK).eval().windows(ids, None, T)[0, 0]
    for q in range(eq):
        assert allow[q].nonzero().flatten().tolist() == list(range(max(0, q - 2), q + 1)), q
    assert torch.equal(allow[eq:], causal_mask(T, T)[eq:])  # '=' and the answer: every earlier token
    both = build_model(cfg_for(prompt_window=3, item_window=True), TOK).eval().windows(ids, None, T)
    item = build_model(cfg_for(item_window=True), TOK).eval().windows(ids, None, T)
    assert torch.equal(both, item & allow[None, None])


def test_a_label_reads_the_same_whatever_its_number_holds_below_the_window():
    """One pass of one layer, prompt_window=4: the label of `12345:a` sees a, ':', 5 and 4 (its number's top two
    digits), so the digits below them cannot change its logits; a wider window lets them."""
    torch.manual_seed(0)
    model = build_model(cfg_for(rel_pos="fire", layers=1, prompt_window=4, length_feature=True), TOK).eval()
    a, b = model(ids_of("12345:a")), model(ids_of("99945:a"))
    assert torch.allclose(a[:, -1], b[:, -1], atol=1e-6)
    assert not torch.allclose(
        a[:, -1], model(ids_of("12355:a"))[:, -1], atol=1e-4
    )  # the 2nd top digit counts
    torch.manual_seed(0)
    wide = build_model(cfg_for(rel_pos="fire", layers=1, prompt_window=5, length_feature=True), TOK).eval()
    assert not torch.allclose(wide(ids_of("12345:a"))[:, -1], wide(ids_of("99945:a"))[:, -1], atol=1e-4)


def test_prompt_window_off_is_todays_model_and_decodes_with_a_cache():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire"), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", prompt_window=0), TOK).eval()
    ids = ids_of(ROW)
    assert torch.equal(before(ids), off(ids))
    torch.manual_seed(0)
    on = build_model(
        cfg_for(rel_pos="fire", prompt_window=5, item_window=True, length_feature=True), TOK
    ).eval()
    assert_decoding_equals_the_full_forward(on, ids, prompt=ROW.index("=") + 1)


@pytest.mark.parametrize("bad", [-1, 1.5, "2"])
def test_prompt_window_bad_value_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"model.prompt_window=.* must be an integer >= 0"):
        build_model(cfg_for(prompt_window=bad), TOK)


def test_prompt_window_composes(compose):
    assert compose(["model.prompt_window=5"]).model.prompt_window == 5
    assert compose([]).model.prompt_window == 0
