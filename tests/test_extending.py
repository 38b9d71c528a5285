"""docs/EXTENDING.md, backed: a toy position scheme, task, block and optimizer, each added through its registry
(the schema's Enums reject names they do not hold, so not through Hydra) and trained for 2 steps; and every
Enum of the schema equal to its registry."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from arith import optim, schema
from arith.data import tasks
from arith.data.tokenizer import ArithTokenizer
from arith.model import ABS_POS, BLOCKS, REL_POS, build_model
from arith.model.attention import Attention
from arith.model.blocks import default_inputs
from arith.model.positions import AbsSlot, check_positions
from arith.train import forward_loss

TOK = ArithTokenizer.build()


def test_every_enum_equals_its_registry():
    for enum, registry in [
        (schema.AbsPos, ABS_POS),
        (schema.RelPos, REL_POS),
        (schema.Block, BLOCKS),
        (schema.Optimizer, optim.OPTIMIZERS),
        (schema.Task, tasks.TASKS),
    ]:
        assert {e.value for e in enum} == set(registry), enum.__name__


def train_two_steps(task="addition", **model) -> list[float]:
    """Two optimizer steps on 16 fresh examples of lengths up to 3; the two losses."""
    torch.manual_seed(0)
    cfg = schema.PretrainConfig(
        model=schema.ModelConfig(width=16, heads=2, ffn=32, layers=1, max_pos=32, max_k=4, **model),
        train=schema.TrainConfig(lr=1e-2),
    )
    return _steps(cfg, task)


def _steps(cfg, task) -> list[float]:
    net = build_model(cfg.model, TOK)
    opt = optim.build_optimizer(net, cfg.train)
    ex = tasks.train_examples(task, TOK, np.random.default_rng(0), 16, 3, 3)
    ids = torch.as_tensor(ex.ids[:, : int(ex.length.max())])
    losses = []
    for _ in range(2):
        loss = forward_loss(net, net, ids, cfg, TOK)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses)) and losses[1] != losses[0]
    return losses


class Sinusoid(AbsSlot):
    """Toy absolute scheme: fixed sinusoids of the token index (Vaswani et al. 2017), no table, no offset."""

    def positions(self, ids, k=0):
        return torch.arange(ids.shape[1], device=ids.device).expand_as(ids)

    def embed(self, pos):
        freq = 10000.0 ** (-torch.arange(0, self.width, 2, device=pos.device) / self.width)
        angles = pos[..., None].float() * freq  # (B, T, width / 2)
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


def test_a_new_position_scheme(monkeypatch):
    monkeypatch.setitem(ABS_POS, "sinusoid", Sinusoid)
    train_two_steps(abs_pos="sinusoid")
    cfg = schema.ModelConfig(abs_pos="sinusoid", max_pos=4)
    check_positions(cfg, max_tokens=1000, max_digits=500, training=True)  # no table: nothing to outgrow


class Copy(tasks.Addition):
    """Toy task: the answer is the first operand (``12+345=12``), in addition's format."""

    name, example = "copy", "12+345"

    def _result(self, ops):
        return ops["a"], ops["la"], None

    def _expected(self, a, b):
        return str(a)


def test_a_new_task(monkeypatch):
    spec = Copy()
    monkeypatch.setitem(tasks.TASKS, spec.name, spec)
    train_two_steps(task="copy")
    ex = tasks.eval_cell("copy", TOK, 3, 2, 8, 0)
    assert all(spec.check(TOK.decode(row[: n - 1])) for row, n in zip(ex.ids, ex.length))
    assert spec.cell_cost(3, 3) < spec.cell_cost(4, 4)  # the grid's shard balancer asks the task


class AttentionOnly(nn.Module):
    """Toy block: x + attn(ln(x)), no feed-forward."""

    def __init__(self, cfg, index: int = 0):
        super().__init__()
        self.ln, self.attn = nn.LayerNorm(cfg.width, bias=False), Attention(cfg)

    def prepare(self, q_pos, k_pos):
        return self.attn.prepare(q_pos, k_pos)

    def out_projections(self):
        return [self.attn.proj]

    def forward(self, x, inp=None, cache=None):
        return x + self.attn(self.ln(x), default_inputs(self, x) if inp is None else inp, cache)


def test_a_new_block(monkeypatch):
    monkeypatch.setitem(BLOCKS, "attention_only", AttentionOnly)
    train_two_steps(block="attention_only", rel_pos="rope")


def test_a_new_optimizer(monkeypatch):
    def sgd(model, cfg):
        return torch.optim.SGD(optim.param_groups(model, cfg.weight_decay, cfg.embedding_lr_scale), lr=cfg.lr)

    monkeypatch.setitem(optim.OPTIMIZERS, "sgd", sgd)
    cfg = schema.PretrainConfig(
        model=schema.ModelConfig(width=16, heads=2, ffn=32, layers=1, max_pos=32, max_k=4),
        train=schema.TrainConfig(lr=1e-2, optimizer="sgd"),
    )
    _steps(cfg, "addition")
    with pytest.raises(Exception, match="sgd"):
        schema.OmegaConf.structured(
            schema.TrainConfig(optimizer="sgd")
        )  # the Enum rejects it: add it there too
