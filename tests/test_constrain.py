"""Sorting's label-permutation decoding (arith/eval/constrain.py, eval.label_permutation,
model.eval_label_permutation): the mask, greedy decoding through it with and without the KV cache and as rows
leave the batch, its composition with the order vote, and plain decoding when it is off."""

import pytest
import torch

from arith.data.tasks import get_task
from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.eval.constrain import LabelPermutation
from arith.eval.decode import generate
from arith.eval.order_vote import ItemTokens
from arith.eval.quick import evaluate_cell
from arith.eval.vote import decode
from arith.schema import ModelConfig
from tests.test_decode import TOK, Scripted, make

LABEL_LAST = get_task("sorting", answer_format="label_last")
A, B, C, D = (TOK.vocab[x] for x in "abcd")


def prompts(*problems: str) -> torch.Tensor:
    """Left-padded label_last prompts, and their PAD counts."""
    rows = [TOK.encode(LABEL_LAST.prompt(p)) for p in problems]
    width = max(map(len, rows))
    return torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])


def pads(ids: torch.Tensor) -> torch.Tensor:
    return (ids == TOK.pad_id).sum(dim=1)


class PrefersA(torch.nn.Module):
    """Stand-in model: EOS scores highest; after a label, ',' next; then the labels a, b, c, ... in that order of
    preference. Plain greedy decoding stops at once; the constraint makes it write the prompt's labels in
    alphabetical order."""

    resolve_k, resolve_recurrences, new_cache = (
        Scripted.resolve_k,
        Scripted.resolve_recurrences,
        Scripted.new_cache,
    )

    def forward(self, ids, recurrences=None, k=None, cache=None, start=0, pad=None):
        logits = torch.full((ids.shape[0], ids.shape[1], TOK.vocab_size), -100.0)
        for rank, label in enumerate(TOK.label_ids):
            logits[:, -1, label] = -rank
        after_label = torch.isin(ids[:, -1], torch.tensor(TOK.label_ids))
        logits[:, -1, TOK.comma_id] = torch.where(after_label, 5.0, -50.0)
        logits[:, -1, TOK.eos_id] = 10.0
        return logits


def test_the_mask_rules_out_repeats_absent_labels_and_an_early_eos():
    ids = prompts("305,7,41")  # labels a, b, c
    rule = LabelPermutation(ids, TOK.label_ids, TOK.eos_id, TOK.vocab_size)
    scores = torch.zeros(1, TOK.vocab_size)
    masked = rule.mask(scores)
    assert masked[0, [A, B, C]].tolist() == [0, 0, 0]
    assert masked[0, D] == float("-inf") and masked[0, TOK.eos_id] == float("-inf")
    assert masked[0, TOK.comma_id] == 0 and masked[0, TOK.digit_ids[3]] == 0  # the rest as scored
    for label in (B, A):
        rule.wrote(torch.tensor([label]))
    masked = rule.mask(scores)
    assert masked[0, [A, B]].tolist() == [float("-inf")] * 2 and masked[0, C] == 0
    assert masked[0, TOK.eos_id] == float("-inf")  # c is still to come
    rule.wrote(torch.tensor([C]))
    masked = rule.mask(scores)
    assert masked[0, TOK.eos_id] == 0  # every label written: EOS, and nothing else (no trailing ',')
    assert (masked[0, torch.arange(TOK.vocab_size) != TOK.eos_id] == float("-inf")).all()


class TrailingComma(PrefersA):
    """Stand-in model: PrefersA, but ',' after a label outscores EOS (the sorting preset's answer to a lone
    15-digit number was `a,`)."""

    def forward(self, ids, recurrences=None, k=None, cache=None, start=0, pad=None):
        logits = super().forward(ids, recurrences, k, cache, start, pad)
        after_label = torch.isin(ids[:, -1], torch.tensor(TOK.label_ids))
        logits[:, -1, TOK.comma_id] = torch.where(after_label, 20.0, -50.0)
        return logits


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_last_label_ends_the_answer(use_cache):
    ids = prompts("305,7,41", "5")
    kw = dict(pad=pads(ids), use_cache=use_cache)
    out = generate(TrailingComma(), ids, 8, TOK.eos_id, TOK.pad_id, label_ids=TOK.label_ids, **kw)
    assert [TOK.decode(row) for row in out.tolist()] == ["a,b,c", "a"]  # not "a,b,c," and "a,"


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_model_that_would_stop_writes_every_label_once(use_cache):
    ids = prompts("305,7,41", "9,8,7,6", "5")
    kw = dict(pad=pads(ids), use_cache=use_cache)
    plain = generate(PrefersA(), ids, 10, TOK.eos_id, TOK.pad_id, **kw)
    assert (plain[:, 0] == TOK.eos_id).all()  # off: the model's own greedy answer
    out = generate(PrefersA(), ids, 10, TOK.eos_id, TOK.pad_id, label_ids=TOK.label_ids, **kw)
    texts = [TOK.decode(row) for row in out.tolist()]
    assert texts == ["a,b,c", "a,b,c,d", "a"]


def follows_the_rule(row: list[int], labels: set[int]) -> bool:
    """No label twice and none the prompt lacks; EOS, if written, only after every label."""
    body = row[: row.index(TOK.eos_id)] if TOK.eos_id in row else row
    written = [x for x in body if x in set(TOK.label_ids)]
    complete = TOK.eos_id not in row or set(written) == labels
    return len(written) == len(set(written)) and set(written) <= labels and complete


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_real_untrained_model_follows_the_rule_as_rows_leave(use_cache):
    problems = ["305,7,41", "9,8,7,6,5,4", "12,3", "1,1,1,1,1"]
    ids = prompts(*problems)
    model = make(rel_pos="fire", seed=3)
    kw = dict(pad=pads(ids), use_cache=use_cache)
    plain = generate(model, ids, 20, TOK.eos_id, TOK.pad_id, **kw)
    out = generate(model, ids, 20, TOK.eos_id, TOK.pad_id, label_ids=TOK.label_ids, **kw)
    rows = [TOK.label_ids[: len(p.split(","))] for p in problems]
    assert not all(follows_the_rule(r, set(x)) for r, x in zip(plain.tolist(), rows))  # it would break it
    for row, labels in zip(out.tolist(), rows):
        assert follows_the_rule(row, set(labels)), TOK.decode(row)


def test_label_permutation_composes_with_the_order_vote():
    problems = ["305,7,41,9", "5,17,3"]
    ids = prompts(*problems)
    model = make(rel_pos="fire", seed=1)
    args = (20, TOK.eos_id, TOK.pad_id)
    kw = dict(pad=pads(ids), vote_ks=[], order_votes=5, items=ItemTokens.of(TOK))
    out = decode(model, ids, *args, label_permutation=True, **kw)
    for problem, row in zip(problems, out.tolist()):
        assert follows_the_rule(row, set(TOK.label_ids[: len(problem.split(","))])), TOK.decode(row)
    one = decode(
        model, ids, *args, pad=pads(ids), vote_ks=[], label_permutation=True, items=ItemTokens.of(TOK)
    )
    assert torch.equal(
        one, generate(model, ids, *args, pad=pads(ids), label_ids=TOK.label_ids)
    )  # one order, no offsets' vote: generate's constrained answers


def test_settings_record_the_label_permutation():
    cfg = ModelConfig(eval_label_permutation=True)
    s = eval_settings.resolve(cfg, "100", "raw", task=("sorting", "label_last"))
    assert s.label_permutation and s.tag().endswith("_perm")
    assert s.columns()["label_permutation"] == "true" and "permutations of the labels" in s.describe()
    off = eval_settings.resolve(cfg, "100", "raw", label_permutation=False)  # eval.* overrides the run's
    assert not off.label_permutation and "perm" not in off.tag() and off.columns()["label_permutation"] == ""
    with pytest.raises(ConfigError, match=r"^eval.label_permutation=1 must be true or false$"):
        eval_settings.resolve(cfg, "100", "raw", label_permutation=1)
    with pytest.raises(
        ConfigError, match=r"^model.eval_label_permutation=true needs sorting .*task is addition$"
    ):
        eval_settings.resolve(cfg, "100", "raw", task=("addition", "direct"))
    with pytest.raises(ConfigError, match="sorting with data.format=values"):
        eval_settings.resolve(cfg, "100", "raw", task=("sorting", "values"))


def test_evaluate_cell_constrains_sorting_and_refuses_other_tasks():
    model = make(rel_pos="fire", seed=2)
    got = evaluate_cell(model, TOK, LABEL_LAST, 3, 4, 8, 0, label_permutation=True)
    assert got["n"] == 8
    with pytest.raises(ConfigError, match="^eval.label_permutation=true needs sorting"):
        evaluate_cell(model, TOK, "addition", 3, 3, 4, 0, label_permutation=True)
    with pytest.raises(ValueError, match="label_permutation=True needs items"):
        decode(model, prompts("305,7"), 6, TOK.eos_id, TOK.pad_id, label_permutation=True)


def test_pretrain_refuses_a_label_permutation_on_a_task_without_labels(compose):
    from arith.start import validate_pretrain

    validate_pretrain(compose(["+experiment=quickstart_sorting", "model.eval_label_permutation=true"]))
    with pytest.raises(ConfigError, match="^model.eval_label_permutation=true needs sorting"):
        validate_pretrain(compose(["+experiment=quickstart", "model.eval_label_permutation=true"]))
