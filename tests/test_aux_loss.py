"""model.aux_loss: the running-sum target is c^_k = sum_{i+j=k} a_i b_j + carry at the position that writes product
digit k (checked against Python's integers on real direct-format rows); off is today's model exactly (no probe,
the same logits and the same loss); on, the probe's loss reaches the model's gradients; a task or format the
target cannot read, an unknown name and a bad weight are one-line errors; a tiny run trains with it end to end."""

import numpy as np
import pytest
import torch

import arith
from arith.aux_loss import RUNNING_SUM_SCALE, aux_loss, digit_values, running_sum_targets
from arith.data import tasks as T
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.model import build_model
from arith.step import forward_loss
from tests.test_model import cfg_for

TOK = ArithTokenizer.build()
MUL = T.get_task("multiplication")


def _rows(a_lens, b_lens, seed=0):
    ex = MUL.make(TOK, np.random.default_rng(seed), np.array(a_lens), np.array(b_lens))
    return torch.as_tensor(ex.ids, dtype=torch.long)


def _expected_running_sums(a: int, b: int) -> list[int]:
    """c^_k for k = 0 .. len(a * b) - 1, by the schoolbook definition on Python's integers."""
    ad, bd = [int(c) for c in str(a)[::-1]], [int(c) for c in str(b)[::-1]]
    out, carry = [], 0
    for k in range(len(str(a * b))):
        s = sum(ad[i] * bd[k - i] for i in range(len(ad)) if 0 <= k - i < len(bd))
        out.append(s + carry)
        carry = out[-1] // 10
    return out


def test_running_sums_are_the_schoolbook_ones_at_the_answer_digits():
    rng = np.random.default_rng(3)
    a_lens, b_lens = rng.integers(1, 9, 400), rng.integers(1, 9, 400)
    ids = _rows(a_lens, b_lens)
    target, valid = running_sum_targets(ids, digit_values(ids, TOK), TOK)
    assert target.shape == valid.shape == (ids.shape[0], ids.shape[1] - 1)
    for row, tgt, ok in zip(ids, target, valid):
        text = TOK.decode(row.tolist())
        a_rev, rest = text.split("x")
        b_rev, c_rev = rest.split("=")
        a, b = int(a_rev[::-1]), int(b_rev[::-1])
        got = [round(v * RUNNING_SUM_SCALE) for v in tgt[ok].tolist()]
        want = _expected_running_sums(a, b)
        assert got == want, text
        digits = [int(c) for c in c_rev if c.isdigit()]
        assert [g % 10 for g in got] == digits  # c_k = c^_k mod 10: the digit the position writes
        assert got[-1] < 10  # no carry past the product's top digit


@pytest.mark.parametrize("a,b", [(0, 0), (7, 0), (9, 9), (99999, 99999), (12345678, 9), (1, 10**7)])
def test_running_sums_edge_cases(a, b):
    text = f"{str(a)[::-1]}x{str(b)[::-1]}={str(a * b)[::-1]}"
    ids = torch.tensor([TOK.encode(text) + [TOK.eos_id, TOK.pad_id, TOK.pad_id]])
    target, valid = running_sum_targets(ids, digit_values(ids, TOK), TOK)
    assert [round(v * RUNNING_SUM_SCALE) for v in target[valid].tolist()] == _expected_running_sums(a, b)


def test_off_is_todays_model_and_loss_exactly():
    torch.manual_seed(0)
    before = build_model(cfg_for(rel_pos="fire"), TOK).eval()  # eval: the position offset is fixed
    torch.manual_seed(0)
    off = build_model(cfg_for(rel_pos="fire", aux_loss="none"), TOK).eval()
    assert off.aux_probe is None and before.state_dict().keys() == off.state_dict().keys()
    ids = _rows([3, 4], [2, 5])
    assert torch.equal(before(ids), off(ids))
    torch.manual_seed(0)
    on = build_model(cfg_for(rel_pos="fire", aux_loss="running_sum"), TOK).eval()
    shared = {k: v for k, v in on.state_dict().items() if not k.startswith("aux_probe.")}
    assert shared.keys() == before.state_dict().keys()
    assert all(torch.equal(v, before.state_dict()[k]) for k, v in shared.items())  # the probe is made last
    logits, probe = on(ids, return_aux=True)
    assert torch.equal(logits, before(ids)) and probe.shape == ids.shape


def _step_cfg(compose, *extra):
    return compose(
        [
            "data=multiplication",
            "data.max_len=4",
            "model=small",
            "model.width=32",
            "model.heads=2",
            "model.ffn=64",
        ]
        + list(extra)
    )


def test_the_probe_loss_adds_to_the_lm_loss_and_reaches_the_model(compose):
    cfg_off = _step_cfg(compose)
    cfg_on = _step_cfg(compose, "model.aux_loss=running_sum", "model.aux_weight=0.5")
    ids = _rows([3, 4, 2], [2, 4, 1])
    torch.manual_seed(0)
    off = build_model(cfg_off.model, TOK)
    torch.manual_seed(0)
    on = build_model(cfg_on.model, TOK)
    torch.manual_seed(1)
    base = forward_loss(off, off, ids, cfg_off, TOK)
    torch.manual_seed(1)
    total = forward_loss(on, on, ids, cfg_on, TOK)
    torch.manual_seed(1)
    _, probe = on(ids[:, :-1], k=on.training_offset(ids.shape[0]), return_aux=True)
    extra = aux_loss(probe, ids, TOK, "running_sum")
    assert extra > 0 and torch.allclose(total, base + 0.5 * extra)
    total.backward()
    assert on.aux_probe.weight.grad.abs().sum() > 0
    assert on.tok_emb.weight.grad.abs().sum() > 0


def test_bad_settings_are_one_line_errors(compose):
    from arith.start import validate_pretrain

    with pytest.raises(ConfigError, match=r"model.aux_loss='carry' is unknown; valid: none, running_sum"):
        build_model(cfg_for(aux_loss="carry"), TOK)
    with pytest.raises(Exception, match="aux_los"):
        compose(["model.aux_los=running_sum"])
    bad = [
        (
            ["model.aux_loss=running_sum"],
            "reads rows of data=multiplication data.format=direct, not data=addition",
        ),
        (
            ["data=multiplication", "data.format=scratchpad", "model.aux_loss=running_sum"],
            "not data=multiplication data.format=scratchpad",
        ),
        (["data=multiplication", "model.aux_loss=running_sum", "model.aux_weight=0"], "must be a number > 0"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message) as err:
            validate_pretrain(compose(["train.steps=1", *overrides]))
        assert "\n" not in str(err.value)


def test_key_composes_and_is_in_the_resume_identity(compose):
    from arith.start import IDENTITY_KEYS

    cfg = compose(["data=multiplication", "model.aux_loss=running_sum", "model.aux_weight=0.3"])
    assert str(cfg.model.aux_loss) == "running_sum" and cfg.model.aux_weight == 0.3
    assert str(compose([]).model.aux_loss) == "none"
    assert "model" in IDENTITY_KEYS  # every model key is


def test_a_tiny_run_trains_with_the_probe_and_loads(tmp_path):
    from tests.test_task_main_jobs import _tiny_scratchpad_run

    run_dir = _tiny_scratchpad_run(
        "multiplication", 30, tmp_path, fmt="direct", extra=["model.aux_loss=running_sum"]
    )
    run = arith.load(run_dir)
    assert run.model.aux_probe is not None
    assert run.solve("3x7").isdigit()  # evaluation ignores the probe
