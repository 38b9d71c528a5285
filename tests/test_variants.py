"""Variants from the wider literature: blocks (post-LN, parallel, SAS-P), positions (partial RoPE, ReRoPE,
Position Coupling), optimizers (Lion, Tiger, embedding lr scale) and tied embeddings.

Each variant builds, stays causal, trains a few steps with falling loss, round-trips through a checkpoint and
decodes the same with and without the KV cache; plus the equivalences that pin the new code to the old
(partial RoPE at fraction 1 == RoPE, ReRoPE with a window beyond the sequence == RoPE, Tiger == Lion with
beta1 = beta2) and the defining property of each scheme.
"""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import arith
from arith import checkpoint
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.eval.decode import generate
from arith.model import ABS_POS, BLOCKS, REL_POS, build_model
from arith.model.blocks import identity_minus_mean
from arith.model.positions import RoPE, abacus_positions, rotate
from arith.optim import OPTIMIZERS, Lion, Tiger, build_optimizer
from arith.schema import AbsPos, Block, Injection, ModelConfig, Optimizer, Reduction, RelPos, TrainConfig
from arith.train import lm_loss, train
from tests.conftest import CONFIG_DIR

TOK = ArithTokenizer.build()

# one entry per variant: ModelConfig overrides on top of a tiny looped model
VARIANTS = {
    "post_ln": dict(block="post_ln"),
    "parallel": dict(block="parallel"),
    "sas_p": dict(block="sas_p"),
    "sas_p_rope": dict(block="sas_p", rel_pos="rope"),
    "sas_p_fire": dict(block="sas_p", rel_pos="fire", layers=2),
    "rope_quarter": dict(rel_pos="rope", rope_fraction=0.25),
    "rerope": dict(rel_pos="rerope", rerope_window=3),
    "rerope_leaky": dict(rel_pos="rerope", rerope_window=3, rerope_leaky_k=4.0, rope_fraction=0.5),
    "coupling": dict(abs_pos="coupling"),
    "tied": dict(tie_embeddings=True),
}


def make(seed=0, **kw):
    base = dict(
        width=32, heads=4, ffn=64, layers=1, recurrences=2, input_injection="add", abs_pos="abacus",
        rel_pos="none", max_pos=64, max_k=8, block="pre_ln",
    ) | kw  # fmt: skip
    base["input_injection"] = Injection(base["input_injection"])
    base["abs_pos"], base["rel_pos"] = AbsPos(base["abs_pos"]), RelPos(base["rel_pos"])
    base["block"] = Block(base["block"])
    torch.manual_seed(seed)
    return build_model(ModelConfig(**base), TOK)


def encode(*texts, eos=True):
    rows = [TOK.encode(t) + ([TOK.eos_id] if eos else []) for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [TOK.pad_id] * (width - len(r)) for r in rows])


BATCH = encode("21+543=753", "999+1=0001", "5+55=06", "12+34=46", "7+8=51", "301+9=013")


# ------------------------------------------------------------------------------------------- registries
def test_registry_keys_equal_schema_enums():
    assert set(BLOCKS) == {e.value for e in Block}
    assert set(OPTIMIZERS) == {e.value for e in Optimizer}
    assert set(ABS_POS) == {e.value for e in AbsPos}
    assert set(REL_POS) == {e.value for e in RelPos}


@pytest.mark.parametrize(
    "group,registry,key", [("block", BLOCKS, "model.block"), ("optimizer", OPTIMIZERS, "train.optimizer")]
)
def test_option_files_are_the_registry_and_compose(compose, group, registry, key):
    names = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    assert names == sorted(registry)
    for name in names:
        cfg = compose(["+experiment=quickstart", f"+{group}={name}"])
        section, field = key.split(".")
        assert getattr(cfg[section], field).value == name


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(block="post_norm"), "model.block='post_norm' unknown; valid: pre_ln, post_ln, parallel, sas_p"),
        (dict(rel_pos=RelPos.rope, rope_fraction=0.0), "model.rope_fraction"),
        (dict(rel_pos=RelPos.rope, rope_fraction=1.5), "model.rope_fraction"),
        (dict(rel_pos=RelPos.rope, rope_fraction=0.1), "rotate at least 2"),  # 0.1 x 8 dims < 2
        (dict(rel_pos=RelPos.rerope, rerope_window=0), "model.rerope_window"),
        (dict(rel_pos=RelPos.rerope, rerope_leaky_k=-1.0), "model.rerope_leaky_k"),
    ],
)
def test_bad_variant_settings_raise_naming_the_key(changes, message):
    cfg = ModelConfig(width=32, heads=4, ffn=64, layers=1, max_pos=64, max_k=8)
    for name, value in changes.items():
        setattr(cfg, name, value)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, TOK)


def test_bad_optimizer_settings_raise():
    model = make()
    with pytest.raises(ConfigError, match="train.optimizer='sgd' is unknown; valid: adamw, lion, tiger"):
        build_optimizer(model, TrainConfig(), "sgd")
    with pytest.raises(ConfigError, match="train.embedding_lr_scale"):
        build_optimizer(model, TrainConfig(embedding_lr_scale=-1.0))


# ------------------------------------------------------------------------------------------- every variant
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_is_causal(name):
    model = make(**VARIANTS[name]).eval()
    ids = encode("21+543=7530")
    base = model(ids, k=2)
    for t, new in ((9, TOK.digit_ids[9]), (7, TOK.eq_id), (3, TOK.digit_ids[0])):
        changed = ids.clone()
        changed[0, t] = new
        out = model(changed, k=2)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:])


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_trains_and_round_trips_a_checkpoint(name, tmp_path):
    model = make(**VARIANTS[name])
    opt = build_optimizer(model, TrainConfig(lr=3e-3))
    losses = []
    for _ in range(25):
        k = model.training_offset(BATCH.shape[0])
        logits = model(BATCH[:, :-1], k=k)
        loss = lm_loss(logits, BATCH, TOK, answer_only=False, reduction=Reduction.mean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    ckpt = checkpoint.save(tmp_path, 25, model, {}, {"step": 25}, keep_last=1)
    again = make(seed=1, **VARIANTS[name])
    checkpoint.load_weights(ckpt, again)
    model.eval(), again.eval()
    torch.testing.assert_close(again(BATCH, k=3), model(BATCH, k=3), rtol=0, atol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_cached_decoding_equals_uncached(name):
    model = make(**VARIANTS[name], recurrences=2, eval_recurrences=3).eval()
    ids = encode("21+543=753", "999+1=0001")
    full = model(ids, k=1)
    cache, pieces, start = model.new_cache(), [], 0
    for end in (4, 7, 8, 9, 10, 11):  # a prompt, a multi-token chunk, then one token at a time
        pieces.append(model(ids[:, start:end], k=1, cache=cache, start=start))
        start = end
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    prompts = encode("21+54=", "99+19=", "5+555=", eos=False)
    cached = generate(model, prompts, 12, TOK.eos_id, TOK.pad_id)
    assert torch.equal(cached, generate(model, prompts, 12, TOK.eos_id, TOK.pad_id, use_cache=False))


# ------------------------------------------------------------------------------------------- blocks
def test_block_parameter_counts():
    counts = {b.value: make(block=b.value).num_params() for b in Block}
    assert counts["post_ln"] == counts["pre_ln"]
    assert counts["parallel"] == counts["pre_ln"] - 32  # one norm instead of two
    # SAS-P drops V and the output projection (2 W^2) and both norms, adds 3 gains per head and an FFN gain
    assert counts["sas_p"] == counts["pre_ln"] - 2 * 32 * 32 - 2 * 32 + 32 + 3 * 4 + 1


def test_sas_p_starts_as_identity_attention():
    model = make(block="sas_p")
    layer = model.layers[0]
    assert torch.count_nonzero(layer.attn.qkv.weight[:32]) == 0  # W_Q = 0 ...
    assert torch.count_nonzero(layer.attn.qkv.weight[32:]) > 0  # ... keys random
    h = torch.randn(2, 9, 32)
    pos = torch.arange(9)
    # ... so softmax is the uniform causal average C and A = I - C + C
    torch.testing.assert_close(layer.attn(h, layer.prepare(pos, pos)), h, rtol=1e-5, atol=1e-5)
    skip = identity_minus_mean(torch.tensor([2.0]), torch.tensor([0.5]), 2, 5)  # the last 2 of 5 tokens
    want = torch.tensor([[-0.125, -0.125, -0.125, 1.875, 0.0], [-0.1, -0.1, -0.1, -0.1, 1.9]])
    torch.testing.assert_close(skip[0], want)


def test_post_ln_output_is_normalized_and_init_is_depth_scaled():
    model = make(block="post_ln", layers=2, recurrences=4)
    layer = model.layers[0]
    out = layer(torch.randn(2, 7, 32))
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)
    q, _, v = layer.attn.qkv.weight.view(3, 32, 32)
    gain = (8 * 2 * 4) ** -0.25  # DeepNet: (8 N)^(-1/4), N = unrolled depth
    assert abs(q.std().item() - (1 / 32) ** 0.5) < 0.03  # Xavier, gain 1: sqrt(2 / (32 + 32))
    assert abs(v.std().item() - gain * (1 / 32) ** 0.5) < 0.02


# ------------------------------------------------------------------------------------------- positions
def test_partial_rope_with_fraction_one_equals_full_rope():
    full = make(rel_pos="rope").eval()
    one = make(rel_pos="rope", rope_fraction=1.0).eval()
    assert torch.equal(one(BATCH, k=0), full(BATCH, k=0))
    rope, quarter = RoPE(16, 10000.0), RoPE(16, 10000.0, 0.25)
    x = torch.randn(1, 1, 3, 16)
    pos = torch.tensor([5, 17, 40])
    assert torch.equal(rotate(x, rope.rotary(pos)), rotate(x, RoPE(16, 10000.0, 1.0).rotary(pos)))
    turned = rotate(x, quarter.rotary(pos))
    assert torch.equal(turned[..., 4:], x[..., 4:]) and not torch.allclose(turned[..., :4], x[..., :4])


def test_partial_rope_depends_on_relative_offset_only():
    rope = RoPE(16, 10000.0, 0.25)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        return (rotate(q, rope.rotary(torch.tensor([i]))) * rotate(k, rope.rotary(torch.tensor([j])))).sum()

    torch.testing.assert_close(score(9, 2), score(109, 102))
    assert not torch.allclose(score(9, 2), score(9, 3))


@pytest.mark.parametrize("leaky", [0.0, 4.0])
def test_rerope_with_window_beyond_the_sequence_equals_rope(leaky):
    rope = make(rel_pos="rope").eval()
    rerope = make(rel_pos="rerope", rerope_window=64, rerope_leaky_k=leaky).eval()
    rerope.load_state_dict(rope.state_dict())
    torch.testing.assert_close(rerope(BATCH, k=0), rope(BATCH, k=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("leaky", [0.0, 4.0])
def test_rerope_clips_distances_at_the_window(leaky):
    layer = make(rel_pos="rerope", rerope_window=5, rerope_leaky_k=leaky).layers[0].attn.rel
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rope = RoPE(8, 10000.0)

    def rope_score(d):  # plain RoPE score at (fractional) distance d
        return (rotate(q, rope.rotary(torch.tensor([d]))) * rotate(k, rope.rotary(torch.tensor([0.0])))).sum()

    q_pos, k_pos = torch.tensor([30]), torch.arange(31)
    (qn, kn), (qf, kf), in_window = layer.windows(q_pos, k_pos)
    near = (rotate(q, qn) @ rotate(k.expand(1, 1, 31, 8), kn).transpose(-2, -1))[0, 0, 0]
    far = (rotate(q, qf) @ rotate(k.expand(1, 1, 31, 8), kf).transpose(-2, -1))[0, 0, 0]
    scores = torch.where(in_window[0], near, far)
    for j in range(31):
        d = 30 - j
        want = d if d < 5 else 5 + (d - 5) / leaky if leaky else 5
        torch.testing.assert_close(scores[j], rope_score(float(want)), rtol=1e-4, atol=1e-5)


def test_coupling_shares_ids_by_significance_with_an_offset_per_example():
    model = make(abs_pos="coupling")
    ids = encode("21+543=753", "1+1=2")
    base = abacus_positions(model.abs_pos.is_digit(ids))
    assert base[0].tolist() == [1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 0]  # digit j of a, b and the answer share j
    offsets = torch.tensor([[3], [7]])
    assert torch.equal(model.abs_pos.positions(ids, offsets), base + offsets * (base > 0))
    torch.manual_seed(0)
    draws = model.training_offset(64)
    assert draws.shape == (64, 1) and len(set(draws.flatten().tolist())) > 5 and int(draws.max()) <= 8
    model.train()
    torch.manual_seed(0)
    assert model.resolve_k(batch=4).shape == (4, 1)  # training draws one offset per row by itself
    model.eval()
    assert model.resolve_k() == 0
    assert isinstance(make().training_offset(4), int)  # Abacus: one offset for the batch
    with pytest.raises(ValueError, match="per-example"):
        model(ids, k=offsets, cache=model.new_cache())


# ------------------------------------------------------------------------------------------- tied embeddings
def test_tied_embeddings_share_one_matrix_through_a_checkpoint(tmp_path):
    tied, untied = make(tie_embeddings=True), make()
    assert tied.head.weight is tied.tok_emb.weight
    assert untied.num_params() - tied.num_params() == TOK.vocab_size * 32
    ckpt = checkpoint.save(tmp_path, 1, tied, {}, {}, keep_last=1)
    assert len(load_file(str(ckpt / "model.safetensors"))) == len(dict(tied.named_parameters()))
    again = make(seed=3, tie_embeddings=True)
    checkpoint.load_weights(ckpt, again)
    assert again.head.weight is again.tok_emb.weight
    assert torch.equal(again.head.weight, tied.tok_emb.weight)


# ------------------------------------------------------------------------------------------- optimizers
def test_tiger_is_lion_with_equal_betas():
    a, b = make(seed=0), make(seed=0)
    lion = Lion(a.parameters(), lr=1e-3, betas=(0.95, 0.95), weight_decay=0.1)
    tiger = Tiger(b.parameters(), lr=1e-3, beta=0.95, weight_decay=0.1)
    for _ in range(3):
        for model, opt in ((a, lion), (b, tiger)):
            loss = model(BATCH, k=1).logsumexp(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def test_lion_step_is_the_sign_rule():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([0.3, -0.2, 0.0, -1.0])
    opt.step()  # m = 0: update = sign(0.1 g); then p = p (1 - lr wd) - lr update
    torch.testing.assert_close(
        p.data, torch.tensor([1.0, -2.0, 3.0, 0.5]) * 0.95 - 0.1 * torch.tensor([1, -1, 0, -1])
    )
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.01 * torch.tensor([0.3, -0.2, 0.0, -1.0]))


def test_lion_on_all_tensors_at_once_is_the_rule_one_tensor_at_a_time():
    """The multi-tensor step gives bitwise the weights and momenta of the rule applied to each tensor alone."""
    model, ref = make(seed=0), make(seed=0)
    opt = Lion(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    moms = {}
    for _ in range(3):
        for m in (model, ref):
            m.zero_grad()
            m(BATCH, k=1).logsumexp(-1).mean().backward()
        opt.step()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                m = moms.setdefault(n, torch.zeros_like(p))
                update = m.mul(0.9).add_(p.grad, alpha=0.1).sign_()
                p.mul_(1 - 1e-3 * 0.1).add_(update, alpha=-1e-3)
                m.mul_(0.99).add_(p.grad, alpha=0.01)
    for (n, p), q in zip(ref.named_parameters(), model.parameters()):
        assert torch.equal(p, q), n
        assert torch.equal(moms[n], opt.state[q]["exp_avg"]), n


@pytest.mark.parametrize("name", ["adamw", "lion", "tiger"])
def test_optimizer_lowers_the_loss_and_resumes(name):
    cfg = TrainConfig(lr=3e-3, optimizer=Optimizer(name))
    model = make()
    opt = build_optimizer(model, cfg)

    def step(model, opt):
        loss = lm_loss(model(BATCH[:, :-1], k=2), BATCH, TOK, answer_only=False, reduction=Reduction.mean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    losses = [step(model, opt) for _ in range(20)]
    assert losses[-1] < 0.7 * losses[0], losses
    twin = make(seed=5)
    twin.load_state_dict(model.state_dict())
    twin_opt = build_optimizer(twin, cfg)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if through torch.save / load
    step(model, opt), step(twin, twin_opt)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_embedding_lr_scale_zero_freezes_the_tables(name):
    model = make(abs_pos="abacus", tie_embeddings=True)
    opt = build_optimizer(model, TrainConfig(lr=1e-2, optimizer=Optimizer(name), embedding_lr_scale=0.0))
    assert len(opt.param_groups) == 3 and opt.param_groups[2]["lr_scale"] == 0.0
    assert len(build_optimizer(model, TrainConfig(optimizer=Optimizer(name))).param_groups) == 2  # default
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for group in opt.param_groups:  # what the training loop does with the scheduled lr
        group["lr"] = 1e-2 * group.get("lr_scale", 1.0)
    for _ in range(3):
        loss = model(BATCH, k=1).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        frozen = n in ("tok_emb.weight", "abs_pos.table.weight")  # the tied head is tok_emb.weight
        assert torch.equal(p, before[n]) == frozen, n


def test_emb_max_abs_is_logged(compose, tmp_path):
    tiny = [
        "model.width=32", "model.heads=2", "model.ffn=64", "model.layers=1", "model.recurrences=2",
        "model.max_pos=32", "model.max_k=5", "data.max_len=3", "data.streaming=true", "train.batch_size=16",
        "train.progress=false", "train.threads=1", f"runs_root={tmp_path}", "train.steps=3", "train.log_every=1",
        "+optimizer=tiger", "train.lr=1e-3", "train.embedding_lr_scale=0.5", "model.abs_pos=coupling",
        "model.block=sas_p", "model.tie_embeddings=true",
    ]  # fmt: skip
    run_dir = train(compose(tiny))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(0 < row["emb_max_abs"] < 1 for row in rows)
    model = arith.load(run_dir).model  # the run's saved config rebuilds the variant
    assert model.head.weight is model.tok_emb.weight and model.abs_name == "coupling"
    assert model.embedding_max_abs() == pytest.approx(rows[-1]["emb_max_abs"])
