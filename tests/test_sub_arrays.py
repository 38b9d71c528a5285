"""Sorting's order vote over sub-arrays (arith/eval/order_vote.py, eval.order_view_items,
model.eval_order_view_items): the views (every pair covered, equal numbers in order, seeded), a sub-array prompt
and its labels mapped back, the vote through a decoder that answers by the rules, a real model's left-padded views
decoded as each alone, the settings it is recorded in and the one-line errors of its keys."""

import itertools

import pytest
import torch

from arith.errors import ConfigError
from arith.eval import order_vote
from arith.eval import settings as eval_settings
from arith.eval.decode import generate
from arith.eval.order_vote import orders, permuted
from arith.eval.quick import evaluate_cell
from arith.eval.vote import decode
from arith.schema import ModelConfig
from tests.test_decode import TOK
from tests.test_order_vote import DIRECT, ITEMS, LABEL_LAST, by_the_rules, prompt_ids, sorting_model

TASKS = pytest.mark.parametrize("task", [LABEL_LAST, DIRECT], ids=["label_last", "direct"])


@TASKS
@pytest.mark.parametrize("size, votes", [(2, 2), (3, 3), (4, 5)])
def test_sub_arrays_cover_every_pair_and_keep_equal_numbers_in_order(task, size, votes):
    row = prompt_ids(task, "305,7,41,7,1000,7,12,9", pads=2)
    views = orders(row, votes, ITEMS, size)
    assert views[0] == list(range(8))  # the problem's own order first
    subs = views[1:]
    assert all(len(pi) == size and len(set(pi)) == size for pi in subs)
    for x, y in itertools.combinations(range(8), 2):  # each pair in votes - 1 sub-arrays at least
        assert sum(x in pi and y in pi for pi in subs) >= votes - 1
    for pi in subs:  # the three 7s (items 1, 3, 5) keep their relative order
        sevens = [i for i in pi if i in (1, 3, 5)]
        assert sevens == sorted(sevens)
    assert orders(row, votes, ITEMS, size) == views  # seeded by the row
    assert len({tuple(pi) for pi in subs}) > 1


def test_a_view_size_of_at_least_the_items_is_the_plain_order_vote():
    row = prompt_ids(LABEL_LAST, "305,7,41,7,1000")
    for size in (0, 5, 9):
        assert orders(row, 6, ITEMS, size) == orders(row, 6, ITEMS)


@TASKS
def test_a_sub_array_prompt_is_the_smaller_problem_left_padded(task):
    row = prompt_ids(task, "305,7,41,12,9", pads=1)
    view, back = permuted(row, [3, 0, 4], ITEMS)  # items 3, 0 and 4 of the problem, in that order
    small = prompt_ids(task, "12,305,9")
    assert view == [TOK.pad_id] * (len(row) - len(small)) + small  # labels a, b, c, as in training
    a, b, c, d, e = (TOK.vocab[x] for x in "abcde")
    assert back == {a: d, b: a, c: e}  # the view's a is the problem's d (12)


@TASKS
@pytest.mark.parametrize("size", [2, 3])
def test_the_vote_over_sub_arrays_maps_every_view_back(task, size):
    problems = ["305,7,41,7,1000,2", "9,8,7,6,5,4,3", "12,12,12,5"]
    rows = [prompt_ids(task, p) for p in problems]
    width = max(map(len, rows))
    prompts = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    right = by_the_rules(prompts, max_new=16)
    seen = []

    def inner(ids, idx, added):
        seen.append(added)
        return by_the_rules(ids, max_new=16)

    assert torch.equal(order_vote.decode(inner, prompts, 16, 3, ITEMS, size), right)
    assert any(any(a) for a in seen) and not any(seen[0])  # the own order adds no PADs; sub-arrays do
    # a decoder wrong on every problem's own order is outvoted by the sub-arrays, two to one on each pair
    own = [r.tolist() for r in prompts]

    def wrong_on_own(ids, idx, added):
        out = by_the_rules(ids, max_new=16)
        for j, r in enumerate(ids.tolist()):
            if r in own:
                out[j, 0], out[j, 2] = out[j, 2].clone(), out[j, 0].clone()
        return out

    assert not torch.equal(wrong_on_own(prompts, [0, 1, 2], [0, 0, 0]), right)
    assert torch.equal(order_vote.decode(wrong_on_own, prompts, 16, 3, ITEMS, size), right)


@pytest.mark.parametrize("chunk", [1, 5, order_vote.VIEW_ROWS])
def test_sub_array_views_of_every_problem_share_decoding_calls(chunk):
    """The sub-array views of all problems and orders go to `inner` together, `chunk` a call, after the own orders
    (one call); a problem of at most `size` items still votes one whole order a call and stops once settled."""
    problems = ["305,7,41,7,1000,2", "9,8", "12,12,12,5"]
    rows = [prompt_ids(LABEL_LAST, p) for p in problems]
    width = max(map(len, rows))
    prompts = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    calls = []

    def inner(ids, idx, added):
        calls.append(list(idx))
        return by_the_rules(ids, max_new=16)

    assert torch.equal(
        order_vote.decode(inner, prompts, 16, 3, ITEMS, 2, chunk=chunk), by_the_rules(prompts, 16)
    )
    views = [len(orders(r, 3, ITEMS, 2)) - 1 for r in prompts.tolist()]  # beyond the own order
    assert views[0] >= 15 * 2 and views[2] >= 6 * 2  # each pair in 2 views of 2
    subs = [b for b, n in enumerate(views) if b != 1 for _ in range(n)]  # row 1 (2 items) votes whole orders
    assert calls[0] == [0, 1, 2]
    assert calls[-1] == [1]  # its second order agrees with its first: settled, the third never decoded
    assert [b for c in calls[1:-1] for b in c] == subs  # each problem's views in their order
    assert [len(c) for c in calls[1:-1]] == [min(chunk, len(subs) - i) for i in range(0, len(subs), chunk)]


def test_a_real_model_decodes_each_sub_array_as_it_would_alone():
    model = sorting_model(eval_k=1)
    model.eval()
    problems = ["305,7,41,9,1000", "5,17,3,88", "12,3,45,6,78,9"]
    rows = [prompt_ids(LABEL_LAST, p) for p in problems]
    width = max(map(len, rows))
    prompts = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])
    pad = torch.tensor([width - len(r) for r in rows])
    args = dict(max_new=14, eos_id=TOK.eos_id, pad_id=TOK.pad_id)

    def alone(ids, idx, added):  # each view without its PADs, in a batch of its own
        out = []
        for r in ids.tolist():
            ids_r = torch.tensor([[x for x in r if x != TOK.pad_id]])
            out.append(generate(model, ids_r, 14, TOK.eos_id, TOK.pad_id, k=1))
        return torch.cat(out)

    for use_cache in (True, False):
        voted = decode(
            model,
            prompts,
            **args,
            pad=pad,
            order_votes=3,
            order_view_items=3,
            items=ITEMS,
            use_cache=use_cache,
        )
        assert torch.equal(voted, order_vote.decode(alone, prompts, 14, 3, ITEMS, 3))


def test_settings_record_the_view_size_and_check_it():
    cfg = ModelConfig(eval_order_votes=3, eval_order_view_items=3)
    s = eval_settings.resolve(cfg, "100", "raw", task=("sorting", "label_last"))
    assert s.order_view_items == 3 and s.tag().endswith("_orders3-of3")
    assert s.columns()["order_view_items"] == "3" and "sub-arrays of at most 3" in s.describe()
    whole = eval_settings.resolve(cfg, "100", "raw", order_view_items=0)  # eval.* overrides the run's
    assert whole.order_view_items == 0 and whole.tag().endswith("_orders3")
    assert whole.columns()["order_view_items"] == ""  # as CSVs written before the column read
    no_vote = eval_settings.resolve(cfg, "100", "raw", order_votes=1)  # no vote: no views to size
    assert no_vote.order_view_items == 0 and "orders" not in no_vote.tag()
    for bad in (1, -1, True, "3", 2.5):
        with pytest.raises(
            ConfigError, match=rf"^eval.order_view_items={bad!r} must be 0 .* or an integer >= 2"
        ):
            eval_settings.resolve(cfg, "100", "raw", order_view_items=bad)
    with pytest.raises(
        ConfigError, match=r"^model.eval_order_view_items=3 needs sorting .*task is addition$"
    ):
        eval_settings.resolve(ModelConfig(eval_order_view_items=3), "100", "raw", task=("addition", "direct"))


def test_evaluate_cell_reads_sub_arrays_and_refuses_other_tasks():
    model = sorting_model(eval_k=2)
    model.eval()
    got = evaluate_cell(model, TOK, LABEL_LAST, 3, 6, 8, 0, order_votes=3, order_view_items=3)
    assert got["n"] == 8
    with pytest.raises(ConfigError, match="^eval.order_view_items=3 needs sorting"):
        evaluate_cell(model, TOK, "addition", 3, 3, 4, 0, order_view_items=3)


def test_pretrain_checks_the_model_key(compose):
    from arith.start import validate_pretrain

    validate_pretrain(compose(["+experiment=quickstart_sorting", "model.eval_order_view_items=3"]))
    with pytest.raises(ConfigError, match="^model.eval_order_view_items=3 needs sorting"):
        validate_pretrain(compose(["+experiment=quickstart", "model.eval_order_view_items=3"]))
    with pytest.raises(ConfigError, match="^model.eval_order_view_items=1 must be 0"):
        validate_pretrain(compose(["+experiment=quickstart_sorting", "model.eval_order_view_items=1"]))
