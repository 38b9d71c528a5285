"""Test-time ensembling (arith/eval/vote.py): the tie rule, vote over one offset == plain greedy, the answer
vote that stops once settled (same answers as the full vote), the logits
mode's mean distribution, and the one-line errors of the vote keys."""

import pytest
import torch

import arith.eval.vote as vote
from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.eval.decode import generate
from arith.eval.vote import decided, decode, majority
from arith.model import build_model
from arith.model.config_checks import check_vote_ks
from tests.test_decode import TOK, encode, make

ARGS = dict(max_new=10, eos_id=TOK.eos_id, pad_id=TOK.pad_id)


def prompts():
    return encode("21+54=", "99+19=", "5+555=", "87+12=", eos=False)  # (4, 6)


def test_majority_and_its_tie_rule():
    a, b, c = ("1",), ("2",), ("3",)
    assert majority([a, b, b], [0, 3, 5], tie_k=0) == 1  # the most frequent answer wins, whatever tie_k says
    assert majority([a, b, c], [4, 2, 9], tie_k=9) == 2  # a three-way tie goes to eval_k's answer ...
    assert majority([a, b, c], [4, 2, 9], tie_k=7) == 1  # ... else to the smallest offset's
    assert majority([a, a, b, b, c], [6, 5, 3, 8, 1], tie_k=1) == 2  # tie_k's answer is not among the tied
    assert majority([b], [3], tie_k=0) == 0


@pytest.mark.parametrize("mode", ["answer", "logits"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_vote_over_one_offset_equals_plain_greedy(mode, use_cache):
    model = make(abs_pos="abacus", rel_pos="rope", layers=1, recurrences=2, injection="add", eval_k=2)
    model.eval()
    for k in (0, 3):
        plain = generate(model, prompts(), k=k, use_cache=use_cache, **ARGS)
        voted = decode(model, prompts(), k=0, vote_ks=[k], vote_mode=mode, use_cache=use_cache, **ARGS)
        assert torch.equal(voted, plain)
    # no vote set: plain greedy at k (None -> the model's eval_k, as `generate`)
    assert torch.equal(decode(model, prompts(), vote_ks=[], **ARGS), generate(model, prompts(), **ARGS))
    assert torch.equal(decode(model, prompts(), **ARGS), generate(model, prompts(), k=2, **ARGS))


def test_answer_vote_takes_each_problems_majority():
    model = make(abs_pos="abacus", max_k=8, seed=3)
    model.eval()
    ks = [0, 2, 4, 6, 8]
    outs = [generate(model, prompts(), k=k, **ARGS).tolist() for k in ks]
    voted = decode(model, prompts(), k=0, vote_ks=ks, vote_mode="answer", **ARGS).tolist()
    for b, row in enumerate(voted):
        answers = [tuple(o[b]) for o in outs]
        assert row == list(answers[majority(answers, ks, tie_k=0)])
        assert answers.count(tuple(row)) == max(answers.count(a) for a in answers)


def test_decided_when_the_leader_cannot_be_caught():
    a, b = ("1",), ("2",)
    assert decided([a, a, a], remaining=2)  # 3 of 5 agree: settled
    assert not decided([a, a, b], remaining=2)  # 2:1, two votes left: b may still tie or win
    assert decided([a, a, a, b], remaining=1)
    assert not decided([a, b], remaining=0)  # a tie: left to `majority` once every offset has voted
    assert not decided([a, b], remaining=1)


def _counting(monkeypatch):
    """Rows decoded per offset by the answer vote (the real `generate`, counted)."""
    calls = []
    real = vote.generate

    def counted(model, prompts, *args, k=None, **kw):
        calls.append((k, prompts.shape[0]))
        return real(model, prompts, *args, k=k, **kw)

    monkeypatch.setattr(vote, "generate", counted)
    return calls


def test_answer_vote_stops_once_settled_and_answers_as_the_full_vote(monkeypatch):
    # a model whose Abacus table is zero answers alike at every offset: 3 of 5 decodes settle every problem
    model = make(abs_pos="abacus", max_k=8, seed=3)
    with torch.no_grad():
        model.abs_pos.table.weight.zero_()
    model.eval()
    ks = [0, 2, 4, 6, 8]
    full = [generate(model, prompts(), k=k, **ARGS) for k in ks]
    calls = _counting(monkeypatch)
    voted = decode(model, prompts(), k=4, vote_ks=ks, vote_mode="answer", **ARGS)
    assert torch.equal(voted, full[0])
    assert calls == [(4, 4), (0, 4), (2, 4)]  # eval_k first, then the set in order; 6 and 8 never decoded
    # a random model whose offsets disagree: undecided problems get every offset, and the answers are the full
    # vote's, problem by problem
    model = make(abs_pos="abacus", max_k=8, seed=3)
    model.eval()
    calls.clear()
    voted = decode(model, prompts(), k=0, vote_ks=ks, vote_mode="answer", **ARGS).tolist()
    outs = [generate(model, prompts(), k=k, **ARGS).tolist() for k in ks]
    for b, row in enumerate(voted):
        answers = [tuple(o[b]) for o in outs]
        assert row == list(answers[majority(answers, ks, tie_k=0)])
    assert [k for k, _ in calls[:3]] == [0, 2, 4] and all(n <= 4 for _, n in calls)


def test_logits_vote_is_greedy_on_the_mean_distribution():
    model = make(abs_pos="coupling", max_k=8, seed=1)
    model.eval()
    ks = [1, 4, 7]
    p = prompts()
    voted = decode(model, p, vote_ks=ks, vote_mode="logits", **ARGS)
    with torch.no_grad():
        mean = torch.stack([model(p, k=k)[:, -1].softmax(-1) for k in ks]).mean(0)
    assert torch.equal(voted[:, 0], mean.argmax(-1))  # the first token, by hand
    uncached = decode(model, p, vote_ks=ks, vote_mode="logits", use_cache=False, **ARGS)
    assert torch.equal(voted, uncached)  # one KV cache per offset == full recompute


@pytest.mark.parametrize(
    "value, needle",
    [([-1], "integers >= 0"), ([2, 2], "distinct"), ([True], "integers"), ([1.5], "integers")],
)
def test_bad_vote_sets_are_one_line_errors(value, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        check_vote_ks(value, "abacus", "eval.vote_ks")
    assert "eval.vote_ks" in str(err.value) and "\n" not in str(err.value)


def test_vote_needs_a_scheme_with_offsets():
    from tests.test_model import cfg_for

    with pytest.raises(ConfigError, match="model.abs_pos=learned takes no offset") as err:
        build_model(cfg_for("learned", eval_vote_ks=[0, 3]), TOK)
    assert "model.eval_vote_ks" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="eval.vote_ks=.*takes no offset"):
        eval_settings.resolve(cfg_for("none", "rope"), "10", "raw", vote_ks=[0, 1])
    build_model(cfg_for("coupling", eval_vote_ks=[0, 3]), TOK)  # coupling takes one
    assert eval_settings.resolve(cfg_for("learned", eval_vote_ks=None), "10", "raw").vote_ks == ()
