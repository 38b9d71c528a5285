"""Decoding tests: KV-cached == full recompute (logits and tokens), EOS/pad handling, mode restore, left-padded
rows, rows that leave the batch as they finish."""

import pytest
import torch

from arith.data.tokenizer import ArithTokenizer
from arith.eval.decode import generate, prefill_groups
from arith.model import build_model
from arith.schema import AbsPos, Injection, ModelConfig, RelPos

TOK = ArithTokenizer.build()
COMBOS = [(a.value, r.value) for a in AbsPos for r in RelPos]


def make(abs_pos="abacus", rel_pos="none", layers=2, recurrences=1, injection="none", seed=0, **kw):
    sizes = dict(width=32, heads=4, ffn=64, max_pos=64, max_k=8) | kw
    cfg = ModelConfig(
        layers=layers, recurrences=recurrences, input_injection=Injection(injection),
        abs_pos=AbsPos(abs_pos), rel_pos=RelPos(rel_pos), **sizes,
    )  # fmt: skip
    torch.manual_seed(seed)
    return build_model(cfg, TOK)


def encode(*texts, eos=True):
    rows = [TOK.encode(t) + ([TOK.eos_id] if eos else []) for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [TOK.pad_id] * (width - len(r)) for r in rows])


KINDS = [dict(abs_pos=a, rel_pos=r) for a, r in COMBOS] + [
    dict(abs_pos="abacus", rel_pos="fire", layers=1, recurrences=2, injection="add", eval_recurrences=4),
    dict(abs_pos="abacus", rel_pos="rope", layers=2, recurrences=2, injection="add", eval_recurrences=3),
    dict(abs_pos="abacus", rel_pos="none", layers=2, recurrences=2, injection="add", inject_every="layer"),
    dict(abs_pos="learned", rel_pos="fire", fire_max_length=48),  # randomized FIRE, decoded in eval mode
    dict(abs_pos="abacus", rel_pos="fire", fire_max_length=48, eval_k=2),
]


def kind_id(kind):
    return "-".join(f"{v}" for v in kind.values())


@pytest.mark.parametrize("kind", KINDS, ids=kind_id)
def test_cached_logits_equal_full_recompute(kind):
    model = make(**kind)
    model.eval()
    ids = encode("21+543=753", "999+1=0001")  # (2, 11)
    full = model(ids, k=1)
    cache = model.new_cache()
    # a prompt chunk, a multi-token chunk (causal mask with a past), then one token at a time
    pieces, start = [], 0
    for end in (4, 7, 8, 9, 10, 11):
        pieces.append(model(ids[:, start:end], k=1, cache=cache, start=start))
        start = end
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS, ids=kind_id)
def test_cached_generate_equals_uncached(kind):
    model = make(**kind)
    model.eval()
    prompts = encode("21+54=", "99+19=", "5+555=", eos=False)  # equal lengths (6)
    for recurrences in (None, 1, 3):
        cached = generate(model, prompts, 12, TOK.eos_id, TOK.pad_id, recurrences=recurrences)
        plain = generate(model, prompts, 12, TOK.eos_id, TOK.pad_id, recurrences=recurrences, use_cache=False)
        assert cached.shape == (3, 12)
        assert torch.equal(cached, plain)


class Scripted(torch.nn.Module):
    """Stand-in model: row b answers digit 1 until its sequence reaches `stop[b]` tokens, then EOS."""

    def __init__(self, stop):
        super().__init__()
        self.stop = torch.tensor(stop)
        self.calls = 0

    def resolve_k(self, k=None):
        return 0 if k is None else k

    def resolve_recurrences(self, r=None):
        return 1 if r is None else r

    def new_cache(self):
        return object()

    def forward(self, ids, recurrences=None, k=None, cache=None, start=0):
        self.calls += 1
        length = start + ids.shape[1]
        logits = torch.zeros(ids.shape[0], ids.shape[1], TOK.vocab_size)
        nxt = torch.where(length >= self.stop, TOK.eos_id, TOK.digit_ids[1])
        logits[torch.arange(ids.shape[0]), -1, nxt] = 1.0
        return logits


@pytest.mark.parametrize("use_cache", [True, False])
def test_pad_after_eos_and_early_stop(use_cache):
    model = Scripted(stop=[4, 6])
    out = generate(
        model, torch.full((2, 3), TOK.digit_ids[2]), 10, TOK.eos_id, TOK.pad_id, use_cache=use_cache
    )
    one, eos, pad = TOK.digit_ids[1], TOK.eos_id, TOK.pad_id
    assert out.tolist() == [[one, eos] + [pad] * 8, [one, one, one, eos] + [pad] * 6]
    assert model.calls == 4  # stopped once both rows finished


def test_generate_runs_in_eval_mode_and_restores_training():
    model = make(abs_pos="abacus", rel_pos="fire", fire_max_length=48, max_k=8)
    model.train()
    prompts = encode("21+54=", eos=False)
    torch.manual_seed(0)
    a = generate(model, prompts, 6, TOK.eos_id, TOK.pad_id)
    assert model.training
    model.eval()
    b = generate(model, prompts, 6, TOK.eos_id, TOK.pad_id)
    assert torch.equal(a, b)


def test_cache_guards():
    model = make(abs_pos="abacus")
    model.eval()
    cache = model.new_cache()
    model(encode("21+5", eos=False), k=1, cache=cache)
    with pytest.raises(ValueError, match="start=3"):
        model(encode("4", eos=False), cache=cache, start=3)
    with pytest.raises(ValueError, match="k and recurrences"):
        model(encode("4", eos=False), k=2, cache=cache, start=4)
    model(encode("4", eos=False), cache=cache, start=4)  # k None -> the cache's k
    assert cache.length == 5 and cache.k == 1


# ------------------------------------------------------------------ left-padded rows, rows that finish
def test_sas_p_blocks_do_not_allow_left_padding():
    model = make(block="sas_p").eval()
    assert not model.pads_left and make().pads_left
    with pytest.raises(ValueError, match="pads_left"):
        model(torch.tensor([[TOK.pad_id, *TOK.encode("3+4=")]]), pad=torch.tensor([1]))


def test_pad_is_checked_one_line_errors():
    model = make().eval()
    ids = torch.tensor([[TOK.pad_id, *TOK.encode("3+4=")]] * 2)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model(ids, pad=torch.tensor([1]))
    with pytest.raises(ValueError, match="training mode"):
        model.train()(ids, pad=torch.tensor([1, 1]))
    assert model.eval()(ids, pad=[1, 1]).shape[:2] == (2, 5)  # a list is read as long counts


@pytest.mark.parametrize("use_cache", [True, False], ids=["cached", "recomputed"])
def test_generate_decodes_each_left_padded_row_as_alone(use_cache):
    model = make(abs_pos="learned", rel_pos="fire", layers=1, recurrences=2, injection="add").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    rows = [TOK.encode(t) for t in ("21+543=", "9+9=", "12345+6789=", "0+12=")]
    width = max(map(len, rows))
    ids = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    pad = torch.tensor([width - len(r) for r in rows])
    together = generate(model, ids, 8, TOK.eos_id, TOK.pad_id, use_cache=use_cache, pad=pad)
    for row, got in zip(rows, together.tolist()):
        alone = generate(model, torch.tensor([row]), 8, TOK.eos_id, TOK.pad_id, use_cache=use_cache)
        assert got == alone[0].tolist()


@pytest.mark.parametrize("padded", [False, True], ids=["one-length", "left-padded"])
def test_finished_rows_leave_the_batch_and_the_others_decode_as_alone(padded):
    """Rows that finish early (here at their limits: after 1, 2 and 3 of 12 tokens) leave the batch and its
    caches, the decoding forwards see fewer rows, and every row keeps its place and its tokens."""
    model = make(abs_pos="abacus", row_window=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    texts = ["21+543=", "9+9=", "12345+6789=", "0+12=", "7+7=", "123+45="] if padded else ["21+54="] * 6
    rows = [TOK.encode(t) for t in texts]
    rows = rows if padded else [[TOK.digit_ids[i], *row[1:]] for i, row in enumerate(rows)]  # 6 problems
    width = max(map(len, rows))
    ids = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    pad = torch.tensor([width - len(r) for r in rows]) if padded else None
    limits = [12, 1, 12, 3, 12, 2]
    sizes = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kw: sizes.append(len(args[0])) if kw.get("start", 0) else None, with_kwargs=True
    )
    try:
        together = generate(model, ids, 12, eos_id=-1, pad_id=TOK.pad_id, pad=pad, limits=limits)  # no EOS
    finally:
        hook.remove()
    assert sizes[:3] == [6, 4, 3] and len(sizes) == 11  # 2 of 6 finished, then 1 of 4: they leave
    for row, got, n in zip(rows, together.tolist(), limits):
        alone = generate(model, torch.tensor([row]), n, eos_id=-1, pad_id=TOK.pad_id)[0].tolist()
        assert got == alone + [TOK.pad_id] * (12 - n)


def test_prefill_groups_take_rows_of_like_lengths():
    # width 16: lengths 14, 16, 8, 15, 13, 8; a group's shortest >= PREFILL_SPREAD (15/16) of its longest
    assert prefill_groups([2, 0, 8, 1, 3, 8], 16) == [([1, 3], 0), ([0], 2), ([4], 3), ([2, 5], 8)]
    assert prefill_groups([0, 0], 5) == [([0, 1], 0)]
