import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "arith" / "config"

# deterministic, quiet, and polite to the 2-core machine
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")
# train.device=auto reads ARITH_DEVICE: the suite trains on the CPU (bitwise and 1e-5 comparisons, gloo ranks)
# even where a GPU is visible; the CUDA tests ask for train.device=cuda (or move their models) themselves
os.environ.setdefault("ARITH_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def compose():
    """compose(config_name, overrides) -> DictConfig, through Hydra exactly as the entry scripts do."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arith import schema

    schema.register()

    def _compose(overrides=(), config_name="pretrain"):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=list(overrides))

    return _compose


# a tiny adder of one-digit numbers with what a real run may hold: an EMA, checkpoints at 200 and 400, and a
# `best` one picked by selection (on the training length: the model does not get longer ones right yet); about
# 10 s on one core; tests that write into it copy it first
TINY_ADDER = [
    "model.width=64",
    "model.heads=2",
    "model.ffn=128",
    "model.layers=2",
    "model.recurrences=1",
    "model.max_pos=32",
    "model.max_k=3",
    "data.max_len=1",
    "data.streaming=true",
    "train.batch_size=64",
    "train.lr=3e-3",
    "train.steps=400",
    "train.save_every_steps=200",
    "train.ema=0.9",
    "train.select_every=200",
    "train.select_lens=[1]",
    "train.select_n=20",
    "train.progress=false",
    "train.threads=1",
    "name=tiny_adder",
]


@pytest.fixture(scope="session")
def tiny_adder(tmp_path_factory):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from arith import schema
    from arith.train import train

    schema.register()
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("adder_runs")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("pretrain", overrides=[*TINY_ADDER, f"runs_root={root}"])
    return train(cfg)
