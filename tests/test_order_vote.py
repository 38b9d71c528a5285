"""Sorting's vote over orders of the items (arith/eval/order_vote.py, eval.order_votes, model.eval_order_votes):
the orders, the permuted prompts and the labels mapped back, the pairwise (Copeland) count, the vote through a
decoder that answers by the rules, the settings it is recorded in, and the one-line errors of its keys."""

import pytest
import torch

from arith.data.tasks import get_task
from arith.errors import ConfigError
from arith.eval import order_vote
from arith.eval import settings as eval_settings
from arith.eval.order_vote import ItemTokens, copeland, orders, permuted
from arith.eval.quick import evaluate_cell
from arith.eval.vote import decode
from arith.schema import ModelConfig
from tests.test_decode import TOK, make

ITEMS = ItemTokens.of(TOK)
LABEL_LAST = get_task("sorting", answer_format="label_last")
DIRECT = get_task("sorting")


def prompt_ids(task, problem: str, pads: int = 0) -> list[int]:
    return [TOK.pad_id] * pads + TOK.encode(task.prompt(problem))


def sort_by_the_rules(row: list[int], max_new: int) -> list[int]:
    """The right answer's tokens (labels by value, ties by position, EOS, PADs) of a prompt row, read from its
    text: a stand-in decoder that never errs."""
    text = TOK.decode([x for x in row if x != TOK.pad_id]).rstrip("=")
    items = []
    for i, item in enumerate(text.split(",")):
        head, _, tail = item.partition(":")
        digits, label = (head, tail) if head.isdigit() else (tail, head)  # label_last or direct
        items.append((int(digits[::-1]), i, label))
    answer = ",".join(label for _, _, label in sorted(items))
    toks = TOK.encode(answer) + [TOK.eos_id]
    return toks + [TOK.pad_id] * (max_new - len(toks))


def by_the_rules(prompts: torch.Tensor, max_new: int = 12, wrong_on=None) -> torch.Tensor:
    """`sort_by_the_rules` on every row; wrong_on: a prompt row (list) answered with its first two labels
    swapped (a decoder that errs on one order of one problem)."""
    out = []
    for row in prompts.tolist():
        toks = sort_by_the_rules(row, max_new)
        if row == wrong_on:
            toks[0], toks[2] = toks[2], toks[0]
        out.append(toks)
    return torch.tensor(out)


@pytest.mark.parametrize("task", [LABEL_LAST, DIRECT], ids=["label_last", "direct"])
def test_orders_are_permutations_that_keep_equal_numbers_in_order(task):
    row = prompt_ids(task, "305,7,41,7,1000,7", pads=2)
    views = orders(row, 12, ITEMS)
    assert views[0] == list(range(6)) and len(views) == 12
    assert all(sorted(pi) == list(range(6)) for pi in views)
    assert len({tuple(pi) for pi in views}) > 6  # random orders, not one
    for pi in views:  # the three 7s (items 1, 3, 5) keep their relative order
        assert [i for i in pi if i in (1, 3, 5)] == [1, 3, 5]
    assert orders(row, 12, ITEMS) == views  # seeded by the row: the same orders whatever the batch


@pytest.mark.parametrize("task", [LABEL_LAST, DIRECT], ids=["label_last", "direct"])
def test_a_permuted_prompt_moves_the_digits_and_maps_its_labels_back(task):
    row = prompt_ids(task, "305,7,41", pads=1)
    view, back = permuted(row, [2, 0, 1], ITEMS)  # item 0 shows item 2's number, ...
    assert view == prompt_ids(task, "41,305,7", pads=1)  # labels stay a, b, c in place; same length
    a, b, c = (TOK.vocab[x] for x in "abc")
    assert back == {a: c, b: a, c: b}  # the view's a is the problem's c (41)
    assert permuted(row, [0, 1, 2], ITEMS) == (row, {a: a, b: b, c: c})


def test_copeland_counts_pairwise_wins():
    a, b, c, d = 1, 2, 3, 4
    abc = [a, b, c]
    assert copeland([[a, b, c], [b, a, c], [a, b, c]], abc) == [a, b, c]  # two of three put a before b
    assert copeland([None, [c, a, b], None], abc) == [c, a, b]  # unread answers do not vote
    assert copeland([None, [b]], abc) is None  # nothing names two labels
    # a Condorcet cycle a > b > c > a: equal scores, in the order of the first answer that votes
    assert copeland([[a, b, c], [b, c, a], [c, a, b]], abc) == [a, b, c]
    # each answer errs once, in different places: the pairwise count is right where a whole-answer vote ties
    answers = [[b, a, c, d], [a, c, b, d], [a, b, d, c]]
    assert copeland(answers, [a, b, c, d]) == [a, b, c, d]
    # answers that miss a label vote on the pairs they name: c after a (2:0), b first (2:1 over a)
    assert copeland([[a, c], [b, a, c], [b, a]], abc) == [b, a, c]


def test_an_answer_votes_on_the_labels_it_names_once():
    row = prompt_ids(LABEL_LAST, "305,7,41")
    _, back = permuted(row, [1, 2, 0], ITEMS)  # the view's a, b, c are the problem's b, c, a
    a, b, c = (TOK.vocab[x] for x in "abc")
    comma, eos = TOK.comma_id, TOK.eos_id
    assert order_vote._labels([b, comma, c, comma, a, eos, TOK.pad_id], back, ITEMS) == [c, a, b]
    assert order_vote._labels([b, comma, b, comma, a, eos], back, ITEMS) == [b]  # b twice: a alone
    assert order_vote._labels([b, comma, c, eos], back, ITEMS) == [c, a]  # a missing
    assert order_vote._labels([b, comma, c, comma, a], back, ITEMS) is None  # no EOS
    assert order_vote._labels([b, c, a, eos, eos], back, ITEMS) is None  # no commas
    assert order_vote._labels([b, comma, TOK.vocab["d"], eos], back, ITEMS) is None  # not the problem's label
    assert order_vote._labels([eos], back, ITEMS) is None


@pytest.mark.parametrize("task", [LABEL_LAST, DIRECT], ids=["label_last", "direct"])
def test_the_vote_maps_every_order_back_to_the_problem(task):
    problems = ["305,7,41,7,1000,2", "9,8,7,6,5,4", "12,12,12"]
    rows = [prompt_ids(task, p) for p in problems]
    width = max(map(len, rows))
    prompts = torch.tensor([[TOK.pad_id] * (width - len(r)) + r for r in rows])  # left-padded
    right = by_the_rules(prompts)
    # a decoder that is right in every order gives the right answer: each order's labels mapped back
    assert torch.equal(
        order_vote.decode(lambda ids, rows, added: by_the_rules(ids), prompts, 12, 7, ITEMS), right
    )
    # one that errs on the problem's own order of the first problem is outvoted by the other orders
    wrong = prompts[0].tolist()
    assert not torch.equal(by_the_rules(prompts, wrong_on=wrong), right)
    voted = order_vote.decode(
        lambda ids, rows, added: by_the_rules(ids, wrong_on=wrong), prompts, 12, 5, ITEMS
    )
    assert torch.equal(voted, right)


def test_a_problem_stops_once_one_answer_has_most_of_its_orders():
    problems = ["305,7,41,99,1234,6", "900,8,77,10,2345,3", "120,4,55,11,1000,2"]  # one prompt length
    prompts = torch.tensor([prompt_ids(LABEL_LAST, p) for p in problems])
    wrong = prompts[0].tolist()
    calls = []

    def counted(ids, rows, added):
        calls.append(list(rows))
        return by_the_rules(ids, wrong_on=wrong)

    voted = order_vote.decode(counted, prompts, 12, 9, ITEMS)
    assert torch.equal(voted, by_the_rules(prompts))
    # 5 of 9 orders agreeing settle a problem; the first problem's own order erred, so it needs a sixth
    assert calls == [[0, 1, 2]] * 5 + [[0]]
    a, b, c = 1, 2, 3
    assert order_vote.settled([[a, b, c], [a, b, c], [b, a]], [a, b, c], views=5) is None  # 2 of 5
    assert order_vote.settled([[a, b, c]] * 3 + [None], [a, b, c], views=5) == [a, b, c]  # 3 of 5
    assert order_vote.settled([[a, b]] * 3, [a, b, c], views=5) is None  # c missing: not a whole answer


def sorting_model(**kw):
    return make(abs_pos="abacus", rel_pos="fire", layers=1, recurrences=2, injection="add", **kw)


def test_one_order_is_plain_decoding_and_the_vote_needs_the_item_tokens():
    model = sorting_model()
    model.eval()
    prompts = torch.tensor([prompt_ids(LABEL_LAST, "305,7,41"), prompt_ids(LABEL_LAST, "5,17,402")])
    args = dict(max_new=6, eos_id=TOK.eos_id, pad_id=TOK.pad_id)
    plain = decode(model, prompts, **args)
    for off in (0, 1):
        assert torch.equal(decode(model, prompts, order_votes=off, items=ITEMS, **args), plain)
    voted = decode(model, prompts, order_votes=3, items=ITEMS, **args)
    assert voted.shape == plain.shape
    with pytest.raises(ValueError, match="needs items"):
        decode(model, prompts, order_votes=3, **args)


def test_evaluate_cell_votes_on_sorting_and_refuses_other_tasks():
    model = sorting_model(eval_k=2)
    model.eval()
    one = evaluate_cell(model, TOK, LABEL_LAST, 3, 4, 8, 0, order_votes=1)
    voted = evaluate_cell(model, TOK, LABEL_LAST, 3, 4, 8, 0, order_votes=5)
    assert one["n"] == voted["n"] == 8
    with pytest.raises(ConfigError, match="order_votes=5 needs sorting"):
        evaluate_cell(model, TOK, "addition", 3, 3, 4, 0, order_votes=5)
    with pytest.raises(ConfigError, match="data.format=values"):
        evaluate_cell(model, TOK, get_task("sorting", answer_format="values"), 3, 3, 4, 0, order_votes=5)


def test_settings_record_the_order_vote():
    cfg = ModelConfig(eval_order_votes=9)
    s = eval_settings.resolve(cfg, "100", "raw")
    assert s.order_votes == 9 and s.tag().endswith("_orders9")
    assert s.columns()["order_votes"] == "9" and "vote over 9 orders of the items" in s.describe()
    off = eval_settings.resolve(cfg, "100", "raw", order_votes=1)  # eval.order_votes overrides the run's
    assert off.order_votes == 0 and "orders" not in off.tag()
    assert off.columns()["order_votes"] == ""  # as CSVs written before the column read
    with pytest.raises(ConfigError, match=r"^eval.order_votes=-1 must be an integer >= 0"):
        eval_settings.resolve(cfg, "100", "raw", order_votes=-1)
    with pytest.raises(ConfigError, match=r"^model.eval_order_votes=True must be an integer >= 0"):
        eval_settings.resolve(ModelConfig(eval_order_votes=True), "100", "raw")


def test_pretrain_refuses_an_order_vote_on_a_task_without_items(compose):
    from arith.start import validate_pretrain

    validate_pretrain(compose(["+experiment=quickstart_sorting", "model.eval_order_votes=9"]))
    with pytest.raises(ConfigError, match="^model.eval_order_votes=9 needs sorting"):
        validate_pretrain(compose(["+experiment=quickstart", "model.eval_order_votes=9"]))
    with pytest.raises(ConfigError, match="^model.eval_order_votes=-2 must be an integer >= 0"):
        validate_pretrain(compose(["+experiment=quickstart_sorting", "model.eval_order_votes=-2"]))


SORTING_ONLY_FLAGS = [  # (the flag's arguments, its name and value in the errors, arguments that turn it off)
    (["--order-votes", "9"], ("--order-votes=9", "order_votes=9"), ["--order-votes", "1"]),
    (
        ["--label-permutation"],
        ("--label-permutation=true", "label_permutation=true"),
        ["--no-label-permutation"],
    ),
    (
        ["--order-view-items", "3"],
        ("--order-view-items=3", "order_view_items=3"),
        ["--order-view-items", "0"],
    ),
]


@pytest.mark.parametrize(
    "on, named, off", SORTING_ONLY_FLAGS, ids=["order_votes", "label_permutation", "order_view_items"]
)
def test_the_benchmark_and_solve_refuse_a_sorting_only_flag_on_addition(tiny_adder, capsys, on, named, off):
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_self_improve

    from arith.solve import main as solve_main

    with pytest.raises(SystemExit) as exit_:
        bench_self_improve.main([str(tiny_adder), "--lens", "1", "--n", "2", *on])
    assert exit_.value.code == 2
    assert f"error: {named[0]} needs sorting" in capsys.readouterr().err
    assert solve_main([str(tiny_adder), "1+2", *on]) == 2
    assert f"error: {named[1]} needs sorting" in capsys.readouterr().err
    assert solve_main([str(tiny_adder), "1+2", *off]) == 0  # off: plain decoding
