"""The paper's width-1024 looped models have the paper's parameter counts (McLeish et al. 2024, Sec. 4)."""

import pytest
import torch
from omegaconf import OmegaConf

from arith.data.tokenizer import ArithTokenizer
from arith.model import build_model
from arith.schema import ModelConfig

PAPER_M = {(16, 1): 122, (8, 2): 64, (4, 4): 34, (2, 8): 19, (1, 16): 12}


def params(layers, recurrences):
    cfg = OmegaConf.structured(ModelConfig(layers=layers, recurrences=recurrences))
    with torch.device("meta"):  # counts without allocating 120M floats
        return build_model(cfg, ArithTokenizer.build()).num_params() / 1e6


@pytest.mark.parametrize("layers, recurrences", sorted(PAPER_M))
def test_parameter_count_is_close_to_the_paper(layers, recurrences):
    # the original carries ~4-5M of extra embedding-side parameters; the per-layer count is what must agree
    assert PAPER_M[(layers, recurrences)] - 5 <= params(layers, recurrences) <= PAPER_M[(layers, recurrences)]


def test_per_layer_parameters_match_the_paper():
    ours = (params(16, 1) - params(1, 16)) / 15
    paper = (PAPER_M[(16, 1)] - PAPER_M[(1, 16)]) / 15
    assert abs(ours - paper) / paper < 0.02
