"""model.attn_log_n: trained log-n attention scaling, each head's queries times 1 + g_h log(n_i), n_i the keys query
i may see. Off: no parameters and exactly today's logits; on at its start (g = 0): the same logits; on and trained:
the factor is the written one, counts the keys the windows leave, cached decoding equals uncached, and a bad value
is a one-line error."""

import math

import pytest
import torch

from arith.eval.decode import generate
from arith.model import build_model
from arith.model.attention import log_key_counts
from arith.model.decoder import ArithModel
from tests.test_attn_scale import IDS
from tests.test_decode import TOK
from tests.test_model import cfg_before, cfg_for, check_bool_model_key
from tests.test_qk_norm import KINDS, names


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cfg_for(**kw), TOK).eval()


def gains(model) -> dict:
    return {n: p for n, p in model.named_parameters() if "log_n_gain" in n}


@pytest.mark.parametrize("kind", KINDS, ids=names)
def test_off_and_at_its_start_are_todays_model_exactly(kind):
    model = build(attn_log_n=False, **kind)
    assert not gains(model)
    old_cfg = cfg_before("attn_log_n", **kind)  # a model config from before the key existed
    torch.manual_seed(0)
    old = ArithModel(old_cfg, TOK).eval()
    assert model.state_dict().keys() == old.state_dict().keys()
    on = build(attn_log_n=True, **kind)
    g = gains(on)
    assert len(g) == on.cfg.layers and all(p.shape == (on.cfg.heads,) and not p.any() for p in g.values())
    with torch.no_grad():
        ref = old(IDS, k=1)
        assert torch.equal(model(IDS, k=1), ref)
        assert torch.equal(on(IDS, k=1), ref)  # g = 0: every factor is 1


def test_the_factor_is_one_plus_g_log_n():
    """g = c / log 2 in every head: query i (0-based) of an unwindowed row sees i + 1 keys, so its logits are those
    of a model whose q is multiplied by 1 + c log2(i + 1); checked on the first row against the plain model with
    that factor applied as a test-time per-query scale."""
    model = build(attn_log_n=True, abs_pos="abacus", rel_pos="none")
    plain = build(attn_log_n=False, abs_pos="abacus", rel_pos="none")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k not in gains(model)})
    c = 0.3
    with torch.no_grad():
        for p in gains(model).values():
            p.fill_(c / math.log(2))
        T = IDS.shape[1]
        factors = 1 + c * torch.log2(torch.arange(1, T + 1, dtype=torch.float32))
        out = model(IDS, k=1)
        for layer in plain.layers:  # the same factors, through the test-time per-query scale
            attend = layer.attn.attend

            def scaled(q, k, v, inp, cache=None, scalars=None, attend=attend):
                return attend(q * factors.to(q.dtype)[:, None], k, v, inp, cache, scalars)

            layer.attn.attend = scaled
        torch.testing.assert_close(out, plain(IDS, k=1), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(out, model.__class__(model.cfg, TOK).eval()(IDS, k=1), atol=1e-3)


def test_key_counts_follow_the_windows():
    allow = torch.tensor([[True, False, False], [True, True, False], [False, True, True]])[None, None]
    assert torch.equal(log_key_counts(allow, 0, 3, "cpu").exp().round().flatten(), torch.tensor([1.0, 2, 2]))
    causal = log_key_counts(None, 4, 2, "cpu")
    assert causal.shape == (1, 1, 2, 1) and torch.allclose(causal.exp().flatten(), torch.tensor([5.0, 6]))


@pytest.mark.parametrize("kind", KINDS[:3], ids=names)
def test_cached_decoding_equals_uncached_and_a_left_padded_row_decodes_as_alone(kind):
    model = build(attn_log_n=True, **kind)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    kw = dict(max_new=6, eos_id=TOK.eos_id, pad_id=TOK.pad_id, k=1)
    prompts = torch.tensor([TOK.encode("21+543=")])
    assert torch.equal(
        generate(model, prompts, use_cache=True, **kw), generate(model, prompts, use_cache=False, **kw)
    )
    if model.pads_left:  # the key counts leave the PADs out
        alone = generate(model, torch.tensor([TOK.encode("7+654=")]), **kw)
        both = torch.tensor([TOK.encode("21+543="), [TOK.pad_id, *TOK.encode("7+654=")]])
        with torch.no_grad():  # logits too, not only the greedy tokens
            alone_logits = model(torch.tensor([TOK.encode("7+654=")]), k=1)
            torch.testing.assert_close(model(both, k=1, pad=torch.tensor([0, 1]))[1:, 1:], alone_logits)
        for use_cache in (True, False):
            out = generate(model, both, use_cache=use_cache, pad=torch.tensor([0, 1]), **kw)
            assert torch.equal(out[1:], alone)


def test_the_gain_trains():
    model = build(attn_log_n=True, abs_pos="abacus", rel_pos="none").train()
    logits = model(IDS, k=1)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gains(model).values())


def test_a_bad_value_is_a_one_line_error_and_hydra_composes_the_key(compose):
    check_bool_model_key(compose, "attn_log_n")
