"""Model tests: registries, Abacus positions, causality, looped == plain stack, truncated backprop, abacus.py."""

from types import SimpleNamespace

import pytest
import torch

import abacus
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import ABS_POS, BLOCKS, REL_POS, build_abs_pos, build_model, build_rel_pos
from arith.model.positions import RoPE, check_positions, rotate
from arith.schema import AbsPos, Injection, ModelConfig, RelPos

TOK = ArithTokenizer.build()
COMBOS = [(a.value, r.value) for a in AbsPos for r in RelPos]
# (abs, rel, layers, recurrences, injection): the 9 plain combos plus looped models
KINDS = [(a, r, 2, 1, "none") for a, r in COMBOS] + [
    ("abacus", "fire", 1, 3, "add"),
    ("abacus", "rope", 2, 2, "none"),
    ("learned", "none", 1, 3, "add"),
]


def cfg_for(abs_pos="abacus", rel_pos="none", layers=2, recurrences=1, injection="none", **kw):
    base = dict(width=32, heads=4, ffn=64, max_pos=64, max_k=8)
    base.update(kw)
    return ModelConfig(
        layers=layers,
        recurrences=recurrences,
        input_injection=Injection(injection),
        abs_pos=AbsPos(abs_pos),
        rel_pos=RelPos(rel_pos),
        **base,
    )


def cfg_before(key: str, **kw) -> SimpleNamespace:
    """`cfg_for(**kw)` as a run saved before model.`key` existed stores it: every field but that one."""
    return SimpleNamespace(**{k: v for k, v in vars(cfg_for(**kw)).items() if k != key})


def check_bool_model_key(compose, key: str) -> None:
    """A true/false model key: a word is a one-line ConfigError naming it, Hydra composes true and defaults to false,
    and a resume checks it (every model key is in the resume identity)."""
    from arith.start import IDENTITY_KEYS

    with pytest.raises(ConfigError, match=rf"^model.{key}='yes' must be true or false$"):
        build_model(cfg_for(**{key: "yes"}), TOK)
    assert getattr(compose([f"model.{key}=true"]).model, key) is True
    assert getattr(compose([]).model, key) is False
    assert "model" in IDENTITY_KEYS  # a run resumed with the key flipped is refused, as for every model key


def make(*args, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cfg_for(*args, **kw), TOK)


def encode(*texts, eos=True):
    rows = [TOK.encode(t) + ([TOK.eos_id] if eos else []) for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [TOK.pad_id] * (width - len(r)) for r in rows])


# ------------------------------------------------------------------------------------------- registries
def test_registry_keys_equal_schema_enums():
    assert set(ABS_POS) == {e.value for e in AbsPos}
    assert set(REL_POS) == {e.value for e in RelPos}
    assert "pre_ln" in BLOCKS


@pytest.mark.parametrize(
    "key,value,valid",
    [("abs_pos", "abacuss", "none, learned, abacus"), ("rel_pos", "fires", "none, rope, fire")],
)
def test_unknown_names_raise_with_valid_list(key, value, valid):
    cfg = cfg_for()
    setattr(cfg, key, value)
    with pytest.raises(ConfigError, match=f"model.{key}='{value}' unknown; valid: {valid}"):
        build_model(cfg, TOK)
    builder = build_abs_pos if key == "abs_pos" else build_rel_pos
    with pytest.raises(ConfigError, match=valid):
        builder(cfg, TOK) if key == "abs_pos" else builder(cfg)


def test_builders_accept_enum_and_str():
    for a, r in COMBOS:
        cfg = cfg_for(a, r)
        assert type(build_abs_pos(cfg, TOK)) is type(ABS_POS[a](cfg, TOK))
        cfg.abs_pos, cfg.rel_pos = a, r
        assert type(build_rel_pos(cfg)).__name__ == type(REL_POS[r](cfg)).__name__


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"width": 0}, "model.width"),
        ({"heads": -1}, "model.heads"),
        ({"width": 30, "heads": 4}, "model.width=30 must be divisible"),
        ({"layers": 0}, "model.layers"),
        ({"recurrences": 0}, "model.recurrences"),
        ({"max_pos": 0}, "model.max_pos"),
        ({"max_k": -1}, "model.max_k"),
        ({"ffn": 0}, "model.ffn"),
        ({"input_injection": "concat"}, "model.input_injection='concat' unknown; valid: none, add"),
        ({"width": 36, "heads": 4, "rel_pos": RelPos.rope}, "even head dim"),
    ],
)
def test_bad_config_raises_naming_the_key(changes, key):
    cfg = cfg_for()
    for name, value in changes.items():
        setattr(cfg, name, value)
    with pytest.raises(ConfigError, match=key):
        build_model(cfg, TOK)


# ------------------------------------------------------------------------------------------- Abacus
def test_abacus_positions_and_offset():
    model = make("abacus")
    ids = encode("21+543=753", "1+1=2")
    assert model.abs_pos.positions(ids, 0).tolist() == [
        [1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0],
        [1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0],
    ]
    shifted = model.abs_pos.positions(ids, 5)
    assert shifted[0].tolist() == [6, 7, 0, 6, 7, 8, 0, 6, 7, 8, 0]  # only digits move
    assert (shifted[ids == TOK.pad_id] == 0).all()


def test_abacus_k_defaults():
    model = make("abacus", max_k=8, eval_k=3)
    model.eval()
    assert model.resolve_k() == 3 and model.resolve_k(7) == 7
    model.train()
    torch.manual_seed(1)
    draws = {model.resolve_k() for _ in range(200)}
    assert draws == set(range(9))


def test_too_long_raises_config_error():
    model = make("abacus", max_pos=10, max_k=8)
    model.eval()
    with pytest.raises(ConfigError, match=r"model.max_pos=10 too small: positions up to 10 needed"):
        model(encode("1" * 10 + "+1="))
    model(encode("1" * 9 + "+1="))  # fits at k = 0 ...
    with pytest.raises(ConfigError, match="max digits"):
        model(encode("1" * 9 + "+1="), k=1)  # ... not with an offset
    learned = make("learned", max_pos=8)
    with pytest.raises(ConfigError, match="model.max_pos=8 too small"):
        learned(encode("12+34=46"))  # 9 tokens with EOS
    fire = make("none", "fire", fire_max_length=8)
    with pytest.raises(ConfigError, match="model.fire_max_length=8"):
        fire(encode("12+34=46"))  # training mode: randomized positions


def test_check_positions():
    cfg = cfg_for("abacus", max_pos=64, max_k=50, eval_k=0)
    check_positions(cfg, max_tokens=200, max_digits=13, training=True)
    with pytest.raises(ConfigError, match="positions up to 64 needed"):
        check_positions(cfg, max_tokens=20, max_digits=14, training=True)
    check_positions(cfg, max_tokens=20, max_digits=63, training=False)
    with pytest.raises(ConfigError, match="model.max_pos"):
        check_positions(cfg, max_tokens=20, max_digits=63, training=False, k=1)
    with pytest.raises(ConfigError, match="model.max_pos"):
        check_positions(cfg_for("learned", max_pos=16), max_tokens=17, max_digits=3, training=False)
    with pytest.raises(ConfigError, match="model.fire_max_length"):
        check_positions(
            cfg_for("none", "fire", fire_max_length=16), max_tokens=17, max_digits=3, training=True
        )


def test_package_abacus_equals_standalone():
    model = make("abacus", max_pos=40, max_k=8)
    ref = abacus.Abacus(set(TOK.digit_ids), embedding_dim=32, max_seq_length=40, max_k=8)
    ref.embedding.weight.data.copy_(model.abs_pos.table.weight.data)
    torch.manual_seed(3)
    ids = torch.randint(0, TOK.vocab_size, (6, 50))
    rows = encode("21+543=753" + "0" * 20, "987654321x12=" + "3" * 20)
    ids[:2, : rows.shape[1]] = rows
    for k in (0, 4, 8):
        assert torch.equal(model.abs_pos.positions(ids, k), ref.positions(ids, k))
        assert torch.equal(model.abs_pos(ids, k), ref(ids, k))
    with pytest.raises(ConfigError):
        model.abs_pos.positions(encode("1" * 40), 0)
    with pytest.raises(ValueError):
        ref.positions(encode("1" * 40), 0)


# ------------------------------------------------------------------------------------------- equivalences
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k)))
def test_causality(kind):
    a, r, layers, rec, inj = kind
    model = make(a, r, layers, rec, inj)
    model.eval()
    ids = encode("21+543=753")
    base = model(ids, k=2)
    for t, new in ((8, TOK.digit_ids[9]), (7, TOK.eq_id), (3, TOK.digit_ids[0])):
        changed = ids.clone()
        changed[0, t] = new
        out = model(changed, k=2)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:])


def manual(model, ids, k, applications):
    """Reference forward: embed, then apply `applications` (a list of layers) in order, with injection."""
    emb = model.embed(ids, k)
    h = emb
    for j, layer in enumerate(applications):
        if model.inject and j > 0 and j % len(model.layers) == 0:
            h = h + emb
        h = layer(h)
    return model.head(model.ln_f(h))


@pytest.mark.parametrize("a,r", COMBOS)
def test_looped_one_recurrence_equals_plain_stack(a, r):
    model = make(a, r, layers=2, recurrences=1)
    model.eval()
    ids = encode("21+543=753", "9+99=801")
    expected = manual(model, ids, 1, list(model.layers))
    torch.testing.assert_close(model(ids, k=1), expected)


@pytest.mark.parametrize("inj", ["none", "add"])
@pytest.mark.parametrize("r", ["none", "rope", "fire"])
def test_looped_layer_three_times(r, inj):
    model = make("abacus", r, layers=1, recurrences=3, injection=inj)
    model.eval()
    ids = encode("21+543=753")
    layer = model.layers[0]
    torch.testing.assert_close(model(ids, k=0), manual(model, ids, 0, [layer] * 3))
    # eval recurrences may differ from training
    torch.testing.assert_close(model(ids, recurrences=5, k=0), manual(model, ids, 0, [layer] * 5))


def test_injection_with_one_recurrence_is_plain_model():
    plain = make("abacus", "fire", layers=2, recurrences=1, injection="none")
    injected = make("abacus", "fire", layers=2, recurrences=1, injection="add", seed=1)
    injected.load_state_dict(plain.state_dict())
    plain.eval(), injected.eval()
    ids = encode("21+543=753")
    torch.testing.assert_close(plain(ids, k=0), injected(ids, k=0))


def test_inject_every_layer_adds_the_input_before_every_layer_but_the_first():
    model = make("abacus", "rope", layers=2, recurrences=2, injection="add", inject_every="layer")
    model.eval()
    ids = encode("21+543=753", "9+99=801")
    emb, h = model.embed(ids, 1), None
    for j, layer in enumerate(list(model.layers) * 2):
        h = emb if j == 0 else h + emb
        h = layer(h)
    torch.testing.assert_close(model(ids, k=1), model.head(model.ln_f(h)))


def test_inject_every_layer_makes_a_standard_model_differ_and_equals_recurrence_for_one_layer():
    ids = encode("21+543=753")
    plain = make("abacus", "none", layers=3, recurrences=1)
    per_layer = make("abacus", "none", layers=3, recurrences=1, injection="add", inject_every="layer")
    per_layer.load_state_dict(plain.state_dict())
    plain.eval(), per_layer.eval()
    assert not torch.allclose(plain(ids, k=0), per_layer(ids, k=0))
    looped = make("learned", "fire", layers=1, recurrences=3, injection="add")
    looped_layer = make("learned", "fire", layers=1, recurrences=3, injection="add", inject_every="layer")
    looped_layer.load_state_dict(looped.state_dict())
    looped.eval(), looped_layer.eval()
    torch.testing.assert_close(looped(ids, k=0), looped_layer(ids, k=0))


def test_inject_every_unknown_value_is_a_config_error():
    with pytest.raises(ConfigError, match="model.inject_every='block' unknown; valid: recurrence, layer"):
        make(inject_every="block")


@pytest.mark.parametrize("inj", ["none", "add"])
def test_no_grad_recurrences(inj):
    model = make("abacus", "fire", layers=1, recurrences=3, injection=inj)
    ids = encode("21+543=753", "5+5=01")
    full = model(ids, k=2)
    truncated = model(ids, no_grad_recurrences=2, k=2)
    torch.testing.assert_close(full, truncated)  # same value ...
    truncated.square().mean().backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith(("layers", "head")))
    # ... gradient only through the last application: the reference detaches the state before it
    model.zero_grad(set_to_none=True)
    emb = model.embed(ids, 2)
    add = emb if model.inject else 0
    h = model.layers[0](model.layers[0](emb) + add).detach() + add
    model.head(model.ln_f(model.layers[0](h))).square().mean().backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for n in want:
        torch.testing.assert_close(got[n], want[n])
    # the embedding is reached only through input injection
    assert ("tok_emb.weight" in got) == (inj == "add")


def test_training_mode_randomness():
    fire = make("none", "fire", fire_max_length=64)
    ids = encode("21+543=753")
    torch.manual_seed(0)
    a = fire(ids)
    b = fire(ids)
    assert not torch.allclose(a, b)  # randomized FIRE positions differ per call
    fire.eval()
    torch.testing.assert_close(fire(ids), fire(ids))


def test_rope_depends_on_relative_offset_only():
    rope = RoPE(head_dim=8, base=10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        qi = rotate(q, rope.rotary(torch.tensor([i])))
        kj = rotate(k, rope.rotary(torch.tensor([j])))
        return (qi * kj).sum()

    torch.testing.assert_close(score(7, 3), score(107, 103))
    assert not torch.allclose(score(7, 3), score(7, 4))


@pytest.mark.parametrize("a,r", [("abacus", "fire"), ("learned", "rope"), ("none", "none")])
def test_bf16_autocast_forward(a, r):
    model = make(a, r, layers=1, recurrences=2, injection="add")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(encode("21+543=753"), k=1)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_num_params_and_init():
    model = make("abacus", "fire", layers=2, recurrences=4)
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    out_std = model.layers[0].attn.proj.weight.std().item()
    assert out_std < model.layers[0].attn.qkv.weight.std().item() / 3  # depth-scaled output projections
