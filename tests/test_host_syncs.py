"""Host syncs, counted on the CPU: the training step reads no device value outside its logging steps, and cached
decoding reads one per token (its stop test), so that on a GPU neither drains the queue (docs/GPU.md, suspects 3
and 4).

A CPU has no device to wait for, so `HostReads` counts what would be a host-device sync on CUDA: every read of a
tensor's value on the host (`.item()`, `int()`, `float()`, `bool()`, `.tolist()`, `.numpy()`, printing a tensor),
every data-dependent shape (`nonzero`, `masked_select`, ...), and every blocking copy of a host tensor to the
device. Tensors that live on the host by design are left out: those drawn from torch's CPU generator without a
device (`torch.randint(...)`, `torch.randperm(...)`, `torch.tensor(...)`: the checkpointed RNG stream stays on the
CPU on CUDA too), the batches made from numpy arrays (`torch.from_numpy`: read on the host before their copy, e.g.
for train.trim_prompt's answer positions), what is computed from them alone, and foreach AdamW's step counters (CPU
tensors; fused AdamW on CUDA keeps them on the device and reads none). A host tensor copied to the device is a
device tensor after.
"""

from __future__ import annotations

import traceback
import weakref
from contextlib import contextmanager

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import arith.train
from arith import checkpoint
from arith.data.tokenizer import ArithTokenizer
from arith.errors import ConfigError
from arith.eval.decode import generate
from arith.model import build_model
from arith.schema import ModelConfig
from arith.selection import make_ema
from arith.train import train

aten = torch.ops.aten
# ops whose result the host must read (a value, or a shape that depends on values)
READS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten.equal.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
}
HOST_FACTORIES = ("randint", "randperm", "tensor", "as_tensor", "from_numpy")


class HostReads(TorchDispatchMode):
    """Records what would be host-device syncs on CUDA (see the module docstring): `reads`, one (step, where,
    what) each, `where` the innermost frame in arith/, `step` the value of `self.step` at the time."""

    def __init__(self, exempt=()):
        super().__init__()
        self.reads: list[tuple[int, str, str]] = []
        self.step = 0
        self._host: dict[int, weakref.ref] = {}
        self.exempt = exempt  # a callable -> ids of host tensors known only later (optimizer state), or ()

    # ------------------------------------------------------------------ host tensors
    def mark(self, t) -> None:
        if isinstance(t, torch.Tensor):
            i = id(t)
            self._host[i] = weakref.ref(t, lambda _, i=i: self._host.pop(i, None))

    def is_host(self, t) -> bool:
        ref = self._host.get(id(t))
        if ref is not None and ref() is t:
            return True
        return callable(self.exempt) and id(t) in self.exempt()

    def record(self, what: str) -> None:
        frames = [
            f
            for f in traceback.extract_stack()[:-2]
            if "/arith/" in f.filename and "/tests/" not in f.filename
        ]
        where = (
            f"{frames[-1].filename.rsplit('/arith/', 1)[1]}:{frames[-1].lineno} {frames[-1].name}"
            if frames
            else "?"
        )
        self.reads.append((self.step, where, what))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        host = bool(inputs) and all(self.is_host(t) for t in inputs)
        if func in READS and not host:
            self.record(str(func.overloadpacket.__name__))
        if host:
            for t in tree_leaves(out):
                self.mark(t)
        return out

    # ------------------------------------------------------------------ Python-level entries
    @contextmanager
    def patched(self, monkeypatch):
        for name in HOST_FACTORIES:
            original = getattr(torch, name)

            def factory(*args, _original=original, **kwargs):
                t = _original(*args, **kwargs)
                if kwargs.get("device") is None:
                    self.mark(t)
                return t

            monkeypatch.setattr(torch, name, factory)
        for name in ("tolist", "numpy", "cpu", "__format__", "__repr__"):
            original = getattr(torch.Tensor, name)

            def read(t, *args, _original=original, _name=name, **kwargs):
                if not self.is_host(t):
                    self.record(_name)
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, read)
        to = torch.Tensor.to

        def moved(t, *args, **kwargs):
            out = to(t, *args, **kwargs)
            targets = [a for a in (*args, kwargs.get("device")) if isinstance(a, (torch.device, str))]
            if targets and self.is_host(t):
                if not kwargs.get("non_blocking", False):
                    self.record("blocking copy to the device")
                if out is t:  # on the CPU: the device copy is a new tensor, as on CUDA
                    out = to(t, *args, **kwargs, copy=True)
                self._host.pop(id(out), None)
            return out

        monkeypatch.setattr(torch.Tensor, "to", moved)
        with self:
            yield self


# --------------------------------------------------------------------------------------------- training
SMALL = [
    "+experiment=quickstart",
    "model.width=32",
    "model.heads=2",
    "model.ffn=64",
    "model.recurrences=2",
    "data.max_len=3",
    "train.batch_size=16",
    "train.budget_minutes=null",
    "train.steps=7",
    "train.log_every=3",
    "train.save_every_minutes=100",
    "train.progress=false",
    "train.threads=1",
]
LOG_STEPS = {1, 3, 6}  # step 1 and every log_every; step 7 ends with the final save


def counted_run(compose, tmp_path, monkeypatch, *extra) -> HostReads:
    opts = []
    real_build = arith.train.build_optimizer

    def build(*args, **kwargs):
        opts.append(real_build(*args, **kwargs))
        return opts[-1]

    def steps():
        return {id(s["step"]) for opt in opts for s in opt.state.values() if "step" in s}

    counter = HostReads(exempt=steps)
    real_forward = arith.train.forward_loss

    def forward(*args, **kwargs):
        counter.step += 1
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(arith.train, "build_optimizer", build)
    monkeypatch.setattr(arith.train, "forward_loss", forward)
    cfg = compose([*SMALL, f"runs_root={tmp_path}", *extra])
    with counter.patched(monkeypatch):
        run_dir = train(cfg)
    assert checkpoint.latest(run_dir).name == "7"
    return counter


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param([], id="quickstart"),  # Abacus rows (wrapping), the row window, full-depth loss
        pytest.param(["train.ema=0.9"], id="ema"),
        # per-example offsets (a (B, 1) host tensor), the progressive loss's depth draws, two passes
        pytest.param(
            ["model.abs_pos=coupling", "model.alpha=0.5", "model.row_period=0"], id="coupling-progressive"
        ),
        # randomized FIRE positions (a host draw per step), no absolute positions
        pytest.param(
            [
                "model.abs_pos=none",
                "model.eval_vote_ks=null",  # the quick start votes over Abacus offsets
                "model.rel_pos=fire",
                "model.fire_max_length=64",
                "model.row_window=0",
                "model.row_period=0",
            ],
            id="fire-randomized",
        ),
    ],
)
def test_the_training_step_reads_nothing_outside_logging_steps(compose, tmp_path, monkeypatch, extra):
    reads = counted_run(compose, tmp_path, monkeypatch, *extra).reads
    by_step: dict[int, list] = {}
    for step, where, what in reads:
        by_step.setdefault(step, []).append(f"{where} ({what})")
    for step in range(1, 7):
        if step not in LOG_STEPS:
            assert not by_step.get(step), f"step {step} reads the device: {by_step[step]}"
    assert all(by_step.get(step) for step in LOG_STEPS), "the counter sees the logging steps' reads"
    logged = {where.split()[0].split(":")[0] for step in LOG_STEPS for where in by_step[step]}
    # the loss, the grad norm, the tables' largest entry (embedding_max_abs)
    assert logged <= {"train.py", "model/decoder.py"}, logged


def test_the_counter_sees_a_per_step_read(compose, tmp_path, monkeypatch):
    """The harness itself: a host read put back into the step (the old AbacusPos check) is caught."""
    from arith.model import positions

    def eager_check(self, pos):
        int(pos.max())  # a host sync per forward, like the check before the RowWatch

    monkeypatch.setattr(positions.RowWatch, "note", eager_check)
    reads = counted_run(compose, tmp_path, monkeypatch).reads
    assert any(step == 2 and "positions.py" in where for step, where, _ in reads), reads


def test_rows_past_the_table_still_stop_training(compose, tmp_path, monkeypatch):
    """The deferred range check: with the up-front check bypassed, a row past the table is a ConfigError at the
    first logging step, and nothing is saved."""
    monkeypatch.setattr(arith.train, "position_needs", lambda cfg, tok: None)
    cfg = compose([*SMALL, f"runs_root={tmp_path}", "model.row_period=0", "model.max_pos=8", "model.max_k=5"])
    with pytest.raises(ConfigError, match=r"model.max_pos=8 too small: positions up to \d+ needed"):
        train(cfg)
    assert not list(tmp_path.glob("*/checkpoints/*/model.safetensors"))


# --------------------------------------------------------------------------------------------- decoding
TOK = ArithTokenizer.build()


def small_model(abs_pos="abacus", **kw) -> torch.nn.Module:
    cfg = ModelConfig(
        width=32, heads=4, ffn=64, layers=2, recurrences=2, max_pos=64, max_k=8, abs_pos=abs_pos, **kw
    )
    torch.manual_seed(0)
    return build_model(cfg, TOK).eval()


def prompt(text: str, rows: int = 1) -> torch.Tensor:
    return torch.tensor([TOK.encode(text)] * rows)


@pytest.mark.parametrize("abs_pos, kw", [("abacus", {}), ("coupling", {}), ("abacus", {"row_window": 2})])
def test_cached_decoding_reads_once_per_token(monkeypatch, abs_pos, kw):
    model = small_model(abs_pos, **kw)
    ids = prompt("12345+54321=", 4)
    counter = HostReads()
    max_new = 8
    with counter.patched(monkeypatch):
        out = generate(model, ids, max_new, eos_id=-1, pad_id=TOK.pad_id)  # no EOS: every step runs
    assert out.shape == (4, max_new)
    assert len(counter.reads) == max_new, counter.reads  # one per token: the stop test
    assert {where.split()[-1] for _, where, _ in counter.reads} == {"stop_here"}


def test_rows_leave_a_decoding_batch_without_a_host_read(monkeypatch):
    """Rows that finish (here at their limits) leave the batch and its caches, their indices found on the device:
    still one read per token, the stop test's."""
    model = small_model("abacus", row_window=2)
    ids = prompt("12345+54321=", 4)
    counter = HostReads()
    with counter.patched(monkeypatch):
        out = generate(model, ids, 8, eos_id=-1, pad_id=TOK.pad_id, limits=[8, 1, 2, 8])
    assert out[1, 1:].eq(TOK.pad_id).all() and out[2, 2:].eq(TOK.pad_id).all()
    assert len(counter.reads) == 8, counter.reads
    assert {where.split()[-1] for _, where, _ in counter.reads} == {"stop_here"}


def test_decoding_past_the_table_raises(monkeypatch):
    model = small_model("abacus")
    ids = prompt("1" * 60 + "+1=")
    with pytest.raises(ConfigError, match="model.max_pos=64 too small.*while decoding"):
        generate(model, ids, 4, eos_id=TOK.eos_id, pad_id=TOK.pad_id, k=5)
    assert model.abs_pos.watch is None, "the watch is gone after decoding"
    with pytest.raises(ConfigError, match="max digits"):  # a direct call checks at once
        model(ids, k=5)


def test_per_example_offsets_are_formatted_only_on_failure(monkeypatch):
    """Suspect 3: the coupling check built its message, the (B, 1) offsets printed in it, on every call."""
    model = small_model("coupling")
    ids = prompt("12345+54321=", 3)
    k = torch.tensor([[0], [3], [8]])
    counter = HostReads()
    with counter.patched(monkeypatch):
        model.abs_pos.positions(ids, k)
    reads = [what for _, _, what in counter.reads]
    assert reads == ["_local_scalar_dense"], counter.reads  # the range check's max, no printed offsets
    with pytest.raises(ConfigError, match=r"k=0\.\.60 per example"):
        model.abs_pos.positions(ids, torch.tensor([[0], [3], [60]]))


# --------------------------------------------------------------------------------------------- the EMA
def test_ema_is_averaged_models_arithmetic_without_its_host_reads(monkeypatch):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    model = small_model("abacus", rel_pos="fire")
    ours, theirs = make_ema(model, 0.9), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    counter = HostReads()
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        with counter.patched(monkeypatch):
            ours.update_parameters(model)
        theirs.update_parameters(model)
        for a, b in zip(ours.module.state_dict().values(), theirs.module.state_dict().values()):
            assert torch.equal(a, b)
    assert ours.n_averaged == int(theirs.n_averaged) == 4
    assert counter.reads == []
