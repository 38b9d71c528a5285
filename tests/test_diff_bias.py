"""model.diff_bias: per head a_h relu(d) + c_h relu(-d), d = s_h(key) - r_h(query) - t_h, added to the logits. Off:
no parameters and exactly today's logits; on at its start (a = c = t = 0): the same logits; on and trained: the bias
is the written one and acts as a one-sided threshold, cached decoding (grouped, left-padded, rows leaving) equals
uncached, the CPU training path equals the explicit one with the same gradients, the scalars stay float32 under
bf16 autocast, and a bad value is a one-line error. model.diff_bias_init = g starts a = c = -g, so the reads learn
from the first step, and the slopes and the knot are never weight-decayed."""

import pytest
import torch

from arith.errors import ConfigError
from arith.eval.decode import generate
from arith.model import build_model
from arith.model.decoder import ArithModel
from arith.model.diff_bias import DiffBias
from arith.model.flex import set_attention_impl
from arith.optim import param_groups
from tests.test_attn_scale import IDS
from tests.test_decode import TOK
from tests.test_model import cfg_before, cfg_for, check_bool_model_key
from tests.test_qk_norm import KINDS, names


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cfg_for(**kw), TOK).eval()


def diffs(model) -> list[DiffBias]:
    return [m for m in model.modules() if isinstance(m, DiffBias)]


def perturb(model, scale=0.2):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
        for d in diffs(model):  # slopes of either sign and a knot, so that the bias is not 0
            d.slopes.copy_(torch.linspace(-3, 2, d.slopes.numel()).view_as(d.slopes))
            d.knot.fill_(0.1)
    return model


@pytest.mark.parametrize("kind", KINDS, ids=names)
def test_off_and_at_its_start_are_todays_model(kind):
    model = build(diff_bias=False, **kind)
    assert not diffs(model)
    torch.manual_seed(0)
    old = ArithModel(cfg_before("diff_bias", **kind), TOK).eval()  # a config from before the key existed
    assert model.state_dict().keys() == old.state_dict().keys()
    on = build(diff_bias=True, **kind)
    assert len(diffs(on)) == on.cfg.layers
    assert all(not d.slopes.any() and not d.knot.any() for d in diffs(on))
    on.load_state_dict(model.state_dict(), strict=False)  # the same weights, the new reads aside
    with torch.no_grad():
        ref = old(IDS, k=1)
        assert torch.equal(model(IDS, k=1), ref)
        # a = c = 0: the bias is 0; the explicit float32 softmax stands in for SDPA (rounding only)
        torch.testing.assert_close(on(IDS, k=1), ref, rtol=1e-5, atol=1e-5)


def test_the_bias_is_the_written_hinge_and_a_one_sided_threshold():
    d = DiffBias(width=4, heads=1)
    with torch.no_grad():
        d.read.weight.zero_()
        d.read.weight[0, 0] = 1.0  # r reads channel 0 (the query's value)
        d.read.weight[1, 1] = 1.0  # s reads channel 1 (each key's value)
        d.slopes.copy_(torch.tensor([-1.0, -50.0]))  # a, c
        d.knot.fill_(0.5)
    values = torch.tensor([3.0, 7.0, 5.0, 9.0, 4.0])  # the keys; the query holds 4
    x = torch.zeros(1, 5, 4)
    x[0, :, 1] = values
    x[0, -1, 0] = 4.0
    r, s = d.scalars(x)
    bias = d.bias(r, s)[0, 0, -1]  # the last token's row
    gap = values - 4.0 - 0.5
    torch.testing.assert_close(bias, torch.where(gap > 0, -gap, 50.0 * gap))
    assert bias.argmax().item() == 2  # 5: the smallest key above the query's 4 (not 4 itself, not 3)
    assert bias.softmax(-1)[2] > 0.5 and bias.softmax(-1)[[0, 4]].max() < 1e-9


@pytest.mark.parametrize("kind", KINDS, ids=names)
def test_cached_decoding_equals_uncached(kind):
    model = perturb(build(diff_bias=True, **kind))
    kw = dict(max_new=6, eos_id=TOK.eos_id, pad_id=TOK.pad_id, k=1)
    prompts = torch.tensor([TOK.encode("21+543=")])
    assert torch.equal(
        generate(model, prompts, use_cache=True, **kw), generate(model, prompts, use_cache=False, **kw)
    )


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "recomputed"])
def test_left_padded_rows_in_groups_decode_as_alone(use_cache):
    """Rows of several lengths: prefilled in groups and gathered into one cache (the scalars with the keys), rows
    leaving the batch as they finish."""
    model = perturb(build(diff_bias=True, abs_pos="learned", rel_pos="fire", layers=1, recurrences=2))
    rows = [TOK.encode(t) for t in ("21+543=", "9+9=", "12345+6789=", "0+12=", "7+7=", "123+45=")]
    width = max(map(len, rows))
    ids = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    pad = torch.tensor([width - len(r) for r in rows])
    limits = [8, 1, 8, 3, 8, 2]
    together = generate(model, ids, 8, -1, TOK.pad_id, use_cache=use_cache, pad=pad, limits=limits)
    for row, got, n in zip(rows, together.tolist(), limits):
        alone = generate(model, torch.tensor([row]), n, -1, TOK.pad_id, use_cache=use_cache)[0].tolist()
        assert got == alone + [TOK.pad_id] * (8 - n)


@pytest.mark.parametrize("kind", KINDS[:3], ids=names)
def test_the_training_path_equals_the_explicit_one_and_every_part_learns(kind):
    grads = {}
    for impl in ("auto", "sdpa"):  # auto: small_attention with the bias; sdpa: the explicit softmax
        model = perturb(build(diff_bias=True, **kind)).train()
        set_attention_impl(model, impl)
        loss = model(IDS, k=1).logsumexp(-1).mean()
        loss.backward()
        grads[impl] = (
            loss.detach(),
            {n: p.grad.clone() for n, p in model.named_parameters() if ".diff." in n},
        )
    torch.testing.assert_close(grads["auto"][0], grads["sdpa"][0], rtol=1e-5, atol=1e-5)
    assert grads["auto"][1].keys() == grads["sdpa"][1].keys() and grads["auto"][1]
    for name, grad in grads["auto"][1].items():
        torch.testing.assert_close(grad, grads["sdpa"][1][name], rtol=1e-4, atol=1e-5)
        assert grad.abs().sum() > 0, name  # the reads, the slopes and the knot all get gradients


def test_the_scalars_stay_float32_under_bf16_autocast():
    d = DiffBias(width=8, heads=2)
    x = torch.randn(2, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r, s = d.scalars(x)
        bias = d.bias(r, s)
    assert r.dtype == s.dtype == bias.dtype == torch.float32
    torch.testing.assert_close(r, (x @ d.read.weight.T).view(2, 3, 2, 2)[:, :, 0].transpose(1, 2))


def test_a_bad_value_is_a_one_line_error_and_hydra_composes_the_key(compose):
    check_bool_model_key(compose, "diff_bias")


@pytest.mark.parametrize("init", [0.0, 1.5])
def test_an_init_starts_the_slopes_and_the_reads_learn_from_the_first_step(init):
    """a = c = 0 (init 0): the reads get no gradient at all; a = c = -g: they do, and the bias is -g |d|."""
    model = build(diff_bias=True, diff_bias_init=init, abs_pos="abacus", rel_pos="fire").train()
    for d in diffs(model):
        assert torch.equal(d.slopes, torch.full((2 * d.heads,), -init))
        x = torch.randn(1, 4, model.cfg.width)
        r, s = d.scalars(x)
        gap = s[:, :, None, :] - r[:, :, :, None]
        torch.testing.assert_close(d.bias(r, s), -init * gap.abs())
    model(IDS, k=1).logsumexp(-1).mean().backward()
    reads = [d.read.weight.grad for d in diffs(model)]
    if init:
        assert all(g.abs().sum() > 0 for g in reads)
    else:
        assert all(g is None or not g.any() for g in reads)
    no_decay = {
        id(p) for group in param_groups(model, 0.1) if group["weight_decay"] == 0 for p in group["params"]
    }
    for d in diffs(model):  # decay would pull the slopes and the knot back to 0; the reads are matrices
        assert id(d.slopes) in no_decay and id(d.knot) in no_decay and id(d.read.weight) not in no_decay


@pytest.mark.parametrize(
    "key, message, default",
    [
        ("diff_bias_init", r"must be a number >= 0 \(0 = the slopes start at 0\)$", 0.0),
        ("diff_bias_init_below", r"must be a number >= 0 or null \(null = model.diff_bias_init\)$", None),
    ],
)
def test_the_init_keys_reject_bad_values_and_compose(compose, key, message, default):
    for bad in (-1.0, "big", True, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=rf"^model.{key}=.* {message}"):
            build_model(cfg_for(diff_bias=True, **{key: bad}), TOK)
    with pytest.raises(ConfigError, match=rf"^model.{key}=2.0 needs model.diff_bias=true"):
        build_model(cfg_for(**{key: 2.0}), TOK)
    cfg = compose(["model.diff_bias=true", f"model.{key}=0.5"]).model
    assert getattr(cfg, key) == 0.5 and getattr(compose([]).model, key) == default


def test_a_one_sided_start_forbids_keys_below_and_prefers_the_nearest_above():
    """diff_bias_init_below = g' starts c alone at -g': the bias is -g d above the query's scalar and g' d below."""
    model = build(
        diff_bias=True, diff_bias_init=0.5, diff_bias_init_below=4.0, abs_pos="abacus", rel_pos="fire"
    )
    for d in diffs(model):
        a, c = d.slopes.detach().view(2, d.heads)
        assert torch.equal(a, torch.full((d.heads,), -0.5)) and torch.equal(c, torch.full((d.heads,), -4.0))
        r, s = d.scalars(torch.randn(1, 5, model.cfg.width))
        gap = s[:, :, None, :] - r[:, :, :, None]
        torch.testing.assert_close(d.bias(r, s), torch.where(gap > 0, -0.5 * gap, 4.0 * gap))
    symmetric = build(diff_bias=True, diff_bias_init=1.5, diff_bias_init_below=None)
    assert all(torch.equal(d.slopes, torch.full((2 * d.heads,), -1.5)) for d in diffs(symmetric))
