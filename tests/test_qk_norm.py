"""model.qk_norm: each head's queries and keys RMS-normalized before the logits. Off: no parameters and exactly
today's logits; on: the logits no longer depend on the scale of W_Q and W_K, cached decoding equals uncached, and a
bad value is a one-line error."""

import pytest
import torch

from arith.eval.decode import generate
from arith.model import build_model
from arith.model.decoder import ArithModel
from tests.test_attn_scale import IDS
from tests.test_decode import TOK
from tests.test_model import cfg_before, cfg_for, check_bool_model_key

KINDS = [
    dict(abs_pos="abacus", rel_pos="none"),
    dict(abs_pos="learned", rel_pos="rope"),
    dict(abs_pos="abacus", rel_pos="fire", item_window=True),
    dict(abs_pos="none", rel_pos="rerope", rerope_window=4),
    dict(abs_pos="abacus", rel_pos="none", block="sas_p"),
    dict(abs_pos="abacus", rel_pos="none", layers=1, recurrences=3, injection="add", block="post_ln"),
]


def names(kind: dict) -> str:
    return "-".join(map(str, kind.values()))


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cfg_for(**kw), TOK).eval()


@pytest.mark.parametrize("kind", KINDS, ids=names)
def test_off_is_todays_model_exactly(kind):
    model = build(qk_norm=False, **kind)
    assert not any("q_norm" in n or "k_norm" in n for n, _ in model.named_parameters())
    # a model config from before the key existed builds the same weights and logits
    old_cfg = cfg_before("qk_norm", **kind)
    torch.manual_seed(0)
    old = ArithModel(old_cfg, TOK).eval()
    assert model.state_dict().keys() == old.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(model(IDS, k=1), old(IDS, k=1))


@pytest.mark.parametrize("kind", KINDS, ids=names)
def test_on_adds_one_gain_per_channel_and_ignores_the_scale_of_q_and_k(kind):
    model = build(qk_norm=True, **kind)
    cfg = model.cfg
    head_dim = cfg.width // cfg.heads
    gains = {n: p for n, p in model.named_parameters() if "q_norm" in n or "k_norm" in n}
    assert len(gains) == 2 * cfg.layers and all(p.shape == (head_dim,) for p in gains.values())
    with torch.no_grad():  # away from the init (SAS-P starts with W_Q = 0)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        ref = model(IDS, k=1)
        assert torch.isfinite(ref).all()
        for layer in model.layers:
            layer.attn.qkv.weight[: 2 * cfg.width].mul_(7.0)  # W_Q and W_K (SAS-P's qkv holds only them)
        torch.testing.assert_close(model(IDS, k=1), ref, rtol=0, atol=2e-4)
        without = build(qk_norm=False, **kind)
        without.load_state_dict({k: v for k, v in model.state_dict().items() if k not in gains})
        assert not torch.allclose(without(IDS, k=1), ref, atol=1e-3)  # the norm acts


@pytest.mark.parametrize("kind", KINDS[:3], ids=names)
def test_cached_decoding_equals_uncached(kind):
    model = build(qk_norm=True, **kind)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    prompts = torch.tensor([TOK.encode("21+543=")])
    kw = dict(max_new=6, eos_id=TOK.eos_id, pad_id=TOK.pad_id, k=1)
    assert torch.equal(
        generate(model, prompts, use_cache=True, **kw), generate(model, prompts, use_cache=False, **kw)
    )


def test_a_bad_value_is_a_one_line_error_and_hydra_composes_the_key(compose):
    check_bool_model_key(compose, "qk_norm")
