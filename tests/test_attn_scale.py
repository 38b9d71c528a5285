"""Attention temperature: model.attn_logit_scale (training and evaluation) and the test-time Temperature
(eval.attn_scale / _mode / _where). Scale 1 leaves the logits exactly as without it; the SDPA `scale` path and
the q-scaling path agree; `first` scales only the first attention call of a forward pass."""

import math

import pytest
import torch

from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.eval.decode import generate
from arith.model import build_model
from arith.model import flex as flexmod
from arith.model.attention import Temperature, set_attn_temperature
from arith.model.decoder import ArithModel
from arith.schema import AttnScaleMode, AttnScaleWhere
from tests.test_decode import TOK, encode
from tests.test_model import cfg_before, cfg_for

KINDS = [
    dict(abs_pos="abacus", rel_pos="none"),
    dict(abs_pos="learned", rel_pos="rope"),
    dict(abs_pos="abacus", rel_pos="fire"),
    dict(abs_pos="none", rel_pos="rerope", rerope_window=4),  # explicit scores
    dict(abs_pos="abacus", rel_pos="none", block="sas_p"),
    dict(abs_pos="abacus", rel_pos="none", layers=1, recurrences=3, injection="add"),
]
IDS = encode("21+543=753", "999+1=0001")  # (2, 11)


def build(seed=0, **kw):
    torch.manual_seed(seed)
    model = build_model(cfg_for(**kw), TOK)
    return model.eval()


def twin(model, **kw):
    other = build(**kw)
    other.load_state_dict(model.state_dict())
    return other.eval()


def test_modes_match_the_schema_enums():
    from arith.model.attention import TEMPERATURE_MODES, TEMPERATURE_WHERE

    assert TEMPERATURE_MODES == eval_settings.SCALE_MODES == tuple(m.value for m in AttnScaleMode)
    assert TEMPERATURE_WHERE == eval_settings.SCALE_WHERE == tuple(m.value for m in AttnScaleWhere)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_scale_one_is_exactly_todays_logits(kind):
    model = build(attn_logit_scale=1.0, **kind)
    assert all(
        m.sdpa_scale is None for m in model.modules() if hasattr(m, "sdpa_scale")
    )  # SDPA's own 1/sqrt(D)
    # a model config from before the key existed builds the same model
    old_cfg = cfg_before("attn_logit_scale", **kind)
    torch.manual_seed(0)
    old = ArithModel(old_cfg, TOK).eval()
    with torch.no_grad():
        ref = old(IDS, k=1)
        assert torch.equal(model(IDS, k=1), ref)
        for temperature in (Temperature(1.0), Temperature(1.0, "const", "first"), None):
            set_attn_temperature(model, temperature)
            assert model.attn_temperature is None  # an identity is no setting at all
            assert torch.equal(model(IDS, k=1), ref)
        # log mode leaves sequences no longer than training alone: factors of exactly 1
        set_attn_temperature(model, Temperature(1.0, "log", "all", train_len=IDS.shape[1]))
        assert torch.equal(model(IDS, k=1), ref)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_trained_scale_equals_the_same_test_time_scale(kind):
    """Two paths, one result: SDPA's `scale` (model.attn_logit_scale) and scaling q (eval.attn_scale)."""
    scaled = build(attn_logit_scale=1.7, **kind)
    with torch.no_grad():  # away from the init, where SAS-P's W_Q = 0 makes every logit 0
        for p in scaled.parameters():
            p.add_(0.1 * torch.randn_like(p))
    plain = twin(scaled, **kind)
    set_attn_temperature(plain, Temperature(1.7))
    with torch.no_grad():
        a, b = scaled(IDS, k=1), plain(IDS, k=1)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a, twin(scaled, **kind)(IDS, k=1), atol=1e-4)  # and it does change the logits


@pytest.mark.skipif(not flexmod.AVAILABLE, reason="torch without FlexAttention")
def test_flex_path_takes_the_logit_scale():
    sdpa = build(abs_pos="abacus", rel_pos="fire", attn_logit_scale=0.6)
    fast = twin(sdpa, abs_pos="abacus", rel_pos="fire", attn_logit_scale=0.6)
    flexmod.set_attention_impl(sdpa, "sdpa")
    flexmod.set_attention_impl(fast, "flex")
    with torch.no_grad():
        torch.testing.assert_close(fast(IDS, k=1), sdpa(IDS, k=1), rtol=1e-5, atol=1e-5)


def test_first_scales_only_the_first_attention_call():
    kind = dict(abs_pos="abacus", layers=2, recurrences=1)
    model = build(**kind)
    by_hand = twin(model, **kind)
    by_hand.layers[0].attn.sdpa_scale = 2.5 / math.sqrt(by_hand.layers[0].attn.head_dim)  # layer 0 only
    set_attn_temperature(model, Temperature(2.5, "const", "first"))
    with torch.no_grad():
        torch.testing.assert_close(model(IDS, k=1), by_hand(IDS, k=1), rtol=1e-5, atol=1e-5)
    # a looped model: the one layer's first call of each forward pass, not its later recurrences
    looped = build(abs_pos="abacus", layers=1, recurrences=3, injection="add")
    attn, seen = looped.layers[0].attn, []
    inner = attn.attend
    attn.attend = lambda q, k, v, inp, cache=None, scalars=None: (
        seen.append(inp.q_scale) or inner(q, k, v, inp, cache, scalars)
    )
    for where, expected in (("first", [True, False, False]), ("all", [True, True, True])):
        seen.clear()
        set_attn_temperature(looped, Temperature(2.5, "const", where))
        with torch.no_grad():
            looped(IDS, k=1)
        assert [s is not None for s in seen] == expected


def test_log_mode_factors_and_cached_decoding():
    t = Temperature(2.0, "log", "all", train_len=8)
    f = t.factors(0, 20, "cpu")
    assert torch.equal(f[:8], torch.full((8,), 2.0))  # queries that see <= 8 keys: the constant alone
    assert math.isclose(float(f[15]), 2.0 * math.log(16) / math.log(8), rel_tol=1e-6)
    assert torch.equal(t.factors(12, 3, "cpu"), f[12:15])  # by absolute position: a decode step == recompute
    model = build(abs_pos="abacus", rel_pos="rope")
    set_attn_temperature(model, Temperature(1.5, "log", "first", train_len=5))
    p = encode("21+543=", "99+991=", eos=False)
    cached = generate(model, p, 8, TOK.eos_id, TOK.pad_id)
    assert torch.equal(cached, generate(model, p, 8, TOK.eos_id, TOK.pad_id, use_cache=False))


def test_temperature_acts_in_eval_mode_only():
    model = build(abs_pos="abacus")
    ref = twin(model, abs_pos="abacus")
    set_attn_temperature(model, Temperature(3.0))
    model.train()
    ref.train()
    torch.manual_seed(5)
    a = model(IDS, k=1)
    torch.manual_seed(5)
    assert torch.equal(a, ref(IDS, k=1))


@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan, "big"])
def test_bad_logit_scales_are_one_line_errors(value):
    with pytest.raises(ConfigError, match="model.attn_logit_scale") as err:
        build(attn_logit_scale=value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "changes, key",
    [
        (dict(attn_scale=0.0), "eval.attn_scale=0.0"),
        (dict(attn_scale=-2.0), "eval.attn_scale"),
        (dict(attn_scale=math.inf), "eval.attn_scale"),
        (dict(attn_scale_mode="square"), "eval.attn_scale_mode='square' unknown; valid: const, log"),
        (dict(attn_scale_where="last"), "eval.attn_scale_where='last' unknown; valid: all, first"),
        (dict(vote_mode="median"), "eval.vote_mode='median' unknown; valid: answer, logits"),
        (dict(k=-1), "eval.k=-1"),
        (dict(recurrences=0), "eval.recurrences=0"),
    ],
)
def test_bad_eval_settings_are_one_line_errors(changes, key):
    with pytest.raises(ConfigError) as err:
        eval_settings.resolve(cfg_for("abacus"), "10", "raw", **changes)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_temperature_rejects_what_it_cannot_do():
    for bad in (dict(scale=0), dict(mode="square"), dict(where="last"), dict(mode="log", train_len=None)):
        with pytest.raises(ValueError):
            Temperature(**({"scale": 1.0} | bad))
