"""model.detach_recurrences=n: the full-depth pass runs its first n recurrences without autograd (truncated
backprop through the loop). The loss is the same number; the gradients are those of the model called with
no_grad_recurrences=n, and differ from full backprop's; 0 is today's step exactly; bad values are one-line
errors; the key composes, and a run resumed with another value is refused (a model key)."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from arith.data.tasks import get_task
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.files import CONFIG
from arith.model import build_model
from arith.start import check_resume_compatible, validate_pretrain
from arith.step import forward_loss, lm_loss

TOK = ArithTokenizer.build()
BASE = [
    "data.max_len=4",
    "model=small",
    "model.width=32",
    "model.heads=2",
    "model.ffn=64",
    "model.layers=1",
    "model.recurrences=4",
    "model.alpha=0",
]


def _ids() -> torch.Tensor:
    ex = get_task("addition").make(TOK, np.random.default_rng(0), np.array([3, 4, 2]), np.array([2, 4, 1]))
    return torch.as_tensor(ex.ids, dtype=torch.long)


def _loss_and_grads(cfg, ids):
    torch.manual_seed(0)
    model = build_model(cfg.model, TOK)
    torch.manual_seed(1)
    loss = forward_loss(model, model, ids, cfg, TOK)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_same_loss_truncated_gradients(compose):
    full_cfg, cut_cfg = compose(BASE), compose(BASE + ["model.detach_recurrences=2"])
    assert full_cfg.model.detach_recurrences == 0 and cut_cfg.model.detach_recurrences == 2
    ids = _ids()
    full_loss, full_grads = _loss_and_grads(full_cfg, ids)
    cut_loss, cut_grads = _loss_and_grads(cut_cfg, ids)
    assert torch.allclose(full_loss, cut_loss, atol=1e-6)  # the forward is the same
    # the gradients: the model's own truncated backprop (0: today's full backprop), and the two differ
    for cfg, n, grads in ((cut_cfg, 2, cut_grads), (full_cfg, 0, full_grads)):
        torch.manual_seed(0)
        model = build_model(cfg.model, TOK)
        torch.manual_seed(1)
        k = model.training_offset(ids.shape[0])
        call = {"no_grad_recurrences": n} if n else {}  # 0: the call the step made before the key
        logits = model(ids[:, :-1], recurrences=4, k=k, **call)
        lm_loss(logits, ids, TOK, cfg.train.mask_before_equals, cfg.train.loss_reduction).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                assert torch.allclose(grads[name], p.grad, atol=1e-6), name
    assert any(not torch.allclose(cut_grads[n], full_grads[n], atol=1e-6) for n in full_grads)


def test_in_the_resume_identity(compose, tmp_path):
    OmegaConf.save(compose(BASE + ["train.steps=1"]), tmp_path / CONFIG)
    check_resume_compatible(compose(BASE + ["train.steps=2"]), tmp_path)  # the schedule may change
    with pytest.raises(ConfigError, match=r"holds a different run \(model.detach_recurrences: 0 -> 2\)"):
        check_resume_compatible(compose(BASE + ["train.steps=1", "model.detach_recurrences=2"]), tmp_path)


@pytest.mark.parametrize("bad", [4, 9, -1])
def test_bad_values_are_one_line_errors(compose, bad):
    with pytest.raises(ConfigError, match=rf"model.detach_recurrences={bad} must be in 0..3"):
        validate_pretrain(compose(BASE + ["train.steps=1", f"model.detach_recurrences={bad}"]))
    with pytest.raises(Exception, match="detach_recurrence"):
        compose(BASE + ["model.detach_recurrence=1"])
