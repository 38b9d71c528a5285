"""train.trim_prompt: the last block application computes only the positions whose logits the answer-only loss
reads (`step.answer_positions`, the model's `trim`); the loss and its gradients are the untrimmed ones."""

import sys

import pytest
import torch

from arith.data.datasets import make_batches
from arith.errors import ConfigError
from arith.model import build_model
from arith.schema import Reduction
from arith.start import validate_pretrain
from arith.step import answer_positions, forward_loss, lm_loss, trims
from arith.train import train
from tests.conftest import ROOT
from tests.test_model import TOK, encode, make
from tests.test_train import metrics, tiny

sys.path.insert(0, str(ROOT / "scripts"))

# (block, abs, rel, layers, recurrences, injection, extra model keys)
MODELS = [
    ("post_ln", "abacus", "none", 1, 3, "add", {"row_window": 2}),
    ("pre_ln", "abacus", "fire", 2, 2, "add", {}),
    ("parallel", "learned", "rope", 2, 1, "none", {}),
    ("sas_p", "abacus", "fire", 2, 1, "none", {}),  # no `trims`: the decoder picks from the whole output
]


@pytest.mark.parametrize("block, abs_pos, rel_pos, layers, rec, inj, extra", MODELS)
def test_trimmed_logits_are_the_untrimmed_ones_at_those_positions(
    block, abs_pos, rel_pos, layers, rec, inj, extra
):
    model = make(abs_pos, rel_pos, layers, rec, inj, block=block, **extra).train()
    ids = encode("12+345=753", "9+9=81", "4444+1=5444")
    x = ids[:, :-1]
    rows = torch.tensor([[6, 7, 8, 9], [3, 4, 5, 5], [6, 7, 8, 9]])
    torch.manual_seed(1)  # the training offset
    full = model(x, k=3)
    part = model(x, k=3, trim=rows)
    assert part.shape == (3, 4, TOK.vocab_size)
    torch.testing.assert_close(part, full.gather(1, rows[:, :, None].expand(-1, -1, full.shape[-1])))


def test_trim_is_refused_with_a_cache_or_the_wrong_shape():
    model = make("abacus", "none", 1, 2, "add").eval()
    x = encode("12+34=", eos=False)
    with pytest.raises(ValueError, match="trim must be"):
        model(x, trim=torch.tensor([[4, 5]]), cache=model.new_cache())
    with pytest.raises(ValueError, match="trim must be"):
        model(x, trim=torch.tensor([4, 5]))


def test_answer_positions_read_each_rows_answer_and_mask_what_is_repeated():
    # '=' at input position 5, 3 and 6; answers of 3, 2 and 5 targets (EOS included); a row without '='
    ids = encode("12+34=64", "1+1=2", "999+11=0101", "7+8")
    rows = answer_positions(ids, TOK)
    T = ids.shape[1] - 1  # input positions
    assert rows.tolist() == [[5, 6, 7, 8, 9], [3, 4, 5, 6, 7], [6, 7, 8, 9, 10], [T - 1] * 5]
    # the loss over those positions is the loss over all of them, whatever the logits
    logits = torch.randn(ids.shape[0], T, TOK.vocab_size)
    picked = logits.gather(1, rows[:, :, None].expand(-1, -1, TOK.vocab_size))
    for reduction in Reduction:
        torch.testing.assert_close(
            lm_loss(picked, ids, TOK, True, reduction, rows), lm_loss(logits, ids, TOK, True, reduction)
        )
    assert answer_positions(encode("1+2", "3+4"), TOK) is None  # no '=': nothing to trim
    assert answer_positions(encode("1+2=", "3+4=", eos=False), TOK) is None  # no target after '='
    assert answer_positions(encode("=1", "=2"), TOK) is None  # every position read


def test_answer_positions_take_the_last_equals_sign_as_the_loss_does():
    # sorting's successor hint puts a second '=' before the answer (SPEC): the loss reads after the last one
    ids = torch.tensor([TOK.encode("3,1=1=1,3") + [TOK.eos_id]])
    last = max(i for i, t in enumerate(ids[0, :-1].tolist()) if t == TOK.eq_id)
    assert answer_positions(ids, TOK).tolist() == [list(range(last, ids.shape[1] - 1))]


@pytest.mark.parametrize(
    "preset", ["quickstart", "quickstart_sorting", "quickstart_subtraction", "quickstart_multiplication"]
)
def test_trimmed_step_has_the_untrimmed_loss_and_gradients(compose, preset):
    cfg = compose([f"+experiment={preset}", "model.alpha=0.5"])  # the progressive loss's two passes too
    batches, tok = make_batches(cfg.data, 32, 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok).train()

    def step(trim):
        ids = batches.batch(3)
        torch.manual_seed(5)  # the same offset and progressive depths
        model.zero_grad(set_to_none=True)
        loss = forward_loss(model, model, ids, cfg, tok, answer_positions(ids, tok) if trim else None)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    (l0, g0), (l1, g1) = step(False), step(True)
    torch.testing.assert_close(l1, l0)
    assert (g1 - g0).abs().max() <= 1e-5 * g0.abs().max()


def test_trim_is_on_by_default_on_a_cpu_without_compiled_layers(compose):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert trims(compose([]), cpu) and not trims(compose([]), cuda)
    assert not trims(compose(["train.compile=true"]), cpu)
    assert not trims(compose(["train.mask_before_equals=false"]), cpu)  # the loss reads the prompt's logits
    assert not trims(compose(["model.aux_loss=running_sum"]), cpu)  # the probe reads every position
    assert not trims(compose(["train.trim_prompt=false"]), cpu)
    assert trims(compose(["train.trim_prompt=true", "train.compile=true"]), cuda)


def test_forced_trim_with_a_loss_that_reads_the_prompt_is_a_config_error(compose):
    with pytest.raises(ConfigError, match="train.trim_prompt=true needs train.mask_before_equals=true"):
        validate_pretrain(
            compose(["+experiment=quickstart", "train.trim_prompt=true", "train.mask_before_equals=false"])
        )
    validate_pretrain(compose(["+experiment=quickstart", "train.trim_prompt=true"]))


def test_a_run_trains_alike_with_and_without_trim(compose, tmp_path):
    runs = [
        train(tiny(compose, tmp_path / t, "train.steps=6", "train.log_every=1", f"train.trim_prompt={t}"))
        for t in ("true", "false")
    ]
    (on, off) = ([row["loss"] for row in metrics(r) if "loss" in row] for r in runs)
    assert len(on) == 6
    assert on == pytest.approx(off, rel=1e-4)


def test_the_paired_benchmark_reads_a_saving_and_a_rounding_sized_gradient_difference(capsys):
    import bench_trim

    assert bench_trim.main(["--configs", "quickstart", "--steps", "2", "--threads", "1"]) == 0
    row = capsys.readouterr().out.splitlines()[-1].split(" | ")
    assert row[0] == "| quickstart" and row[4].endswith("%")  # the share left out
    assert float(row[5].rstrip(" |")) < 1e-5  # gradients equal up to float rounding
