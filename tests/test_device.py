"""Where a run trains (train.device) and what follows it: the suite runs with and without a visible GPU
(docs/GPU.md, suspects 2, 5, 8 and 12). The CUDA tests at the end run where a GPU is."""

import pytest
import torch

import arith.train
from arith import checkpoint, dist
from arith.errors import ConfigError
from arith.start import IDENTITY_KEYS
from arith.train import train
from tests.test_train import TINY, metrics

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny(compose, tmp_path, *extra):
    return compose([*TINY, f"runs_root={tmp_path}", *extra])


def test_device_choice(monkeypatch):
    monkeypatch.delenv("ARITH_DEVICE")
    assert dist.pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="train.device='tpu' unknown"):
        dist.pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.pick_device("auto") == dist.pick_device(None) == torch.device("cpu")
    with pytest.raises(ConfigError, match="no GPU is visible"):
        dist.pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # SLURM's per-task binding: every task sees its own GPU alone, as cuda:0, whatever its local rank
    assert dist.pick_device("auto", local_rank=3) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert dist.pick_device("cuda", local_rank=3) == torch.device("cuda", 3)
    monkeypatch.setenv("ARITH_DEVICE", "cpu")  # the suite's pin: auto reads it, an explicit choice wins
    assert dist.pick_device("auto") == torch.device("cpu") and dist.pick_device("cuda").type == "cuda"
    monkeypatch.setenv("ARITH_DEVICE", "gpu")
    with pytest.raises(ConfigError, match="ARITH_DEVICE='gpu' unknown"):
        dist.pick_device("auto")


def test_device_is_a_setting_not_part_of_the_run(compose, tmp_path, monkeypatch):
    assert not any(key == "train.device" or key.startswith("train.device") for key in IDENTITY_KEYS)
    assert str(tiny(compose, tmp_path).train.device) == "auto"
    assert dist.pick_device("auto") == torch.device("cpu"), "the suite pins the CPU (conftest: ARITH_DEVICE)"
    assert str(tiny(compose, tmp_path, "train.device=cuda").train.device) == "cuda"
    run_dir = train(tiny(compose, tmp_path, "train.steps=2", "train.device=cpu"))
    train(tiny(compose, tmp_path, "train.steps=3", "train.device=auto"))  # resumes, whatever the device
    assert checkpoint.latest(run_dir).name == "3"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_a_config_error(compose, tmp_path):
    with pytest.raises(ConfigError, match="train.device=cuda but no GPU"):
        train(tiny(compose, tmp_path, "train.steps=2", "train.device=cuda"))


def test_selection_decodes_the_compiled_layers_eagerly(compose, tmp_path, monkeypatch):
    """Suspect 5: with train.compile and no EMA, selection decoded through the compiled layers (eval mode,
    no grad, KV cache, one-token steps): compile after compile inside the budget. Here the 'compiled' layers
    fail outside training, so selection passes only if it decodes eagerly; training itself goes through them."""
    calls = []

    def fake_compile(model):
        for layer in model.layers:

            def compiled(*args, _layer=layer, **kwargs):
                if not _layer.training:
                    raise AssertionError("decoded through the compiled layer")
                calls.append(1)
                return _layer._call_impl(*args, **kwargs)

            layer._compiled_call_impl = compiled

    monkeypatch.setattr(arith.train, "compile_blocks", fake_compile)
    extra = [
        "train.compile=true",
        "train.steps=4",
        "train.select_every=2",
        "train.select_lens=[4]",
        "train.select_n=4",
    ]
    run_dir = train(tiny(compose, tmp_path, *extra))
    assert [r["step"] for r in metrics(run_dir) if "select" in r] == [2, 4]
    assert calls, "training ran through the compiled layers"


@cuda
def test_training_step_on_cuda_syncs_only_at_logging_steps(compose, tmp_path, monkeypatch):
    """The GPU's own count of tests/test_host_syncs.py: CUDA's sync debug mode raises on any host sync in the
    steps that do not log (Abacus rows, the row window, the EMA, fused AdamW, bf16)."""
    step = {"n": 0}
    real_forward = arith.train.forward_loss

    def forward(*args, **kwargs):
        step["n"] += 1
        logging = step["n"] == 1 or step["n"] % 3 == 0
        torch.cuda.set_sync_debug_mode("default" if logging else "error")
        return real_forward(*args, **kwargs)

    real_restore = arith.train._StopFlag.restore

    def loop_done(self):  # right after the loop, before the final save (which reads, as every save does)
        torch.cuda.set_sync_debug_mode("default")
        real_restore(self)

    monkeypatch.setattr(arith.train, "forward_loss", forward)
    monkeypatch.setattr(arith.train._StopFlag, "restore", loop_done)
    cfg = compose(
        [
            "+experiment=quickstart",
            f"runs_root={tmp_path}",
            "train.device=cuda",
            "train.budget_minutes=null",
            "train.steps=7",
            "train.log_every=3",
            "train.ema=0.9",
            "train.save_every_minutes=100",
            "train.progress=false",
        ]
    )
    try:
        run_dir = train(cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert checkpoint.latest(run_dir).name == "7"


def test_forced_flex_on_cuda_needs_torch_2_6(monkeypatch):
    """Suspect 17: train.attention=flex skipped the version gate that auto has."""
    from arith.model import flex

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(flex, "_torch_version", lambda: (2, 5))
    with pytest.raises(ConfigError, match="train.attention=flex needs torch >= 2.6"):
        flex.check_training("flex", gpu, "fire")
    flex.check_training("auto", gpu, "fire")  # auto falls back to SDPA by itself
    flex.check_training("flex", gpu, "rope")  # no bias: flex is never used
    flex.check_training("flex", torch.device("cpu"), "fire")
    monkeypatch.setattr(flex, "_torch_version", lambda: (2, 6))
    flex.check_training("flex", gpu, "fire")


def test_the_after_training_report_decodes_where_it_is_told(monkeypatch, tmp_path):
    """Suspect 8: report_by_length loaded the run on the CPU whatever the training device (pretrain.py now
    passes the run's own)."""
    import arith
    from arith.eval.quick import report_by_length

    seen = []

    def load(run_dir, device="cpu", **kw):
        seen.append(device)
        raise RuntimeError("stop here")

    monkeypatch.setattr(arith, "load", load)
    for device in (torch.device("cpu"), "cuda"):
        with pytest.raises(RuntimeError, match="stop here"):
            report_by_length(tmp_path, max_len=1, n=1, device=device)
    assert seen == [torch.device("cpu"), "cuda"]
