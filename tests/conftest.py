import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "arith" / "config"

# deterministic, quiet, and polite to the 2-core machine
torch.set_num_threads(1)
os.environ.setdefault("WANDB_MODE", "offline")


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
