"""model.opener_embedding: each digit adds a learned embedding of the non-digit that opens its number. Off is
today's model exactly (no parameter, the same logits); the opener of every token is the one written; cached
decoding equals the full forward; a bad value is a one-line error; the key is in the resume identity."""

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.model import build_model
from arith.model.numbers import openers
from arith.model.positions import digit_table
from tests.test_model import cfg_for, check_bool_model_key

TOK = ArithTokenizer.build()


def test_openers_name_the_token_before_each_run_of_digits():
    text = "21x43=4e840,43D040"
    ids = torch.tensor([TOK.encode(text)])
    got = openers(ids, digit_table(TOK), TOK.vocab_size)[0].tolist()
    names = ["." if g == TOK.vocab_size else TOK.id_to_char[g] for g in got]
    # a: no opener (its own row, "."); b: "x"; line 0's prefix "=", its T "e"; line 1's prefix ",", its T "D";
    # a non-digit's is itself
    assert "".join(names) == "..xxx==eeee,,,DDDD"


def test_off_is_todays_model_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire", row_window=2), TOK).eval()
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", row_window=2, opener_embedding=False), TOK).eval()
    assert off.opener_emb is None and before.state_dict().keys() == off.state_dict().keys()
    ids = torch.tensor([TOK.encode("21x43=4e840,43D040")])
    assert torch.equal(before(ids), off(ids))


def test_on_changes_digits_only_and_cached_decoding_equals_the_full_forward():
    torch.manual_seed(0)
    model = build_model(cfg_for(rel_pos="fire", row_window=2, opener_embedding=True), TOK).eval()
    assert model.opener_emb.num_embeddings == TOK.vocab_size + 1
    ids = torch.tensor([TOK.encode("21x43=4e840,43D040")])
    full = model(ids)
    assert torch.allclose(cached_logits(model, ids, prompt=6), full, atol=1e-5)
    with torch.no_grad():  # the table reaches the logits
        model.opener_emb.weight.zero_()
    assert not torch.allclose(model(ids), full)


def cached_logits(model, ids: torch.Tensor, prompt: int) -> torch.Tensor:
    """The logits of `ids` decoded with a KV cache: the first `prompt` tokens at once, then one token a call."""
    cache = model.new_cache()
    steps = [model(ids[:, :prompt], cache=cache)]
    for t in range(prompt, ids.shape[1]):
        steps.append(model(ids[:, t : t + 1], cache=cache, start=t))
    return torch.cat(steps, dim=1)


def assert_decoding_equals_the_full_forward(model, ids: torch.Tensor, prompt: int) -> None:
    """KV-cached decoding (`cached_logits`) and, for a model that allows it, the row left-padded with 3 PADs give
    the full forward's logits."""
    full = model(ids)
    assert torch.allclose(cached_logits(model, ids, prompt=prompt), full, atol=1e-5)
    if model.pads_left:
        padded = torch.cat([torch.full((ids.shape[0], 3), TOK.pad_id), ids], dim=1)
        assert torch.allclose(model(padded, pad=torch.full((ids.shape[0],), 3))[:, 3:], full, atol=1e-5)


def test_bad_value_is_one_line_and_the_key_composes_into_the_resume_identity(compose):
    check_bool_model_key(compose, "opener_embedding")
    with pytest.raises(Exception, match="opener_embeding"):
        compose(["model.opener_embeding=true"])
