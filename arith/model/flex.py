"""FIRE's additive bias through `torch.nn.attention.flex_attention` (the fast path on CUDA).

The SDPA path in `attention.py` adds FIRE's bias as a dense float mask, which keeps SDPA off its flash kernel.
FlexAttention instead fuses `score + bias[h, q, kv]` (a `score_mod`) and the causal mask (a cached `BlockMask`)
into one compiled kernel, forward and backward; the bias gradient flows back into FIRE's MLP.

When it is used (`Attention.attn_impl`, set from `train.attention` by `set_attention_impl`):
    auto  CUDA, torch >= 2.6 (learnable captured biases in the compiled kernel), FIRE, and no past keys
          (training, or the prefill of KV-cached decoding; one-token decode steps stay on SDPA);
    flex  whenever FlexAttention can run on the device (CPU: forward only, unfused; used by tests);
    sdpa  never: SDPA with an additive mask, the reference and the CPU path.
"auto" also lets CPU training on short rows take `small_attention` (its docstring); "sdpa" keeps SDPA there too.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn

IMPLS = ("auto", "sdpa", "flex")
# learnable captured buffers (the FIRE bias needs a gradient) landed in Inductor's flex kernel in 2.6
_MIN_TORCH = (2, 6)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _importable() -> bool:
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:  # torch < 2.5
        return False
    return True


AVAILABLE = _importable()  # a constant, so torch.compile can trace `wanted` without a cache wrapper


def wanted(impl: str, device: torch.device, t_q: int, t_k: int, head_dim: int = 64) -> bool:
    """Whether attention with an additive bias over (t_q, t_k) runs through FlexAttention."""
    if impl == "sdpa" or t_q != t_k or not AVAILABLE:
        return False
    if impl == "flex":
        return True
    if impl != "auto":
        raise ValueError(f"attention impl {impl!r} unknown; valid: {', '.join(IMPLS)}")
    # the compiled kernel's tiles want a power-of-two head dim of at least 16; others stay on SDPA
    tiles = head_dim >= 16 and head_dim & (head_dim - 1) == 0
    return device.type == "cuda" and tiles and _torch_version() >= _MIN_TORCH


def check_training(impl: str, device: torch.device, rel_pos: str) -> None:
    """Raise ConfigError before any work when a forced train.attention=flex cannot train FIRE on this device: on
    CUDA the FIRE bias's gradient through the compiled kernel needs torch >= 2.6 (`auto` falls back to SDPA
    there by itself)."""
    from arith.errors import ConfigError

    if (
        str(impl) == "flex"
        and str(rel_pos) == "fire"
        and device.type == "cuda"
        and _torch_version() < _MIN_TORCH
    ):
        raise ConfigError(
            f"train.attention=flex needs torch >= {'.'.join(map(str, _MIN_TORCH))} to train FIRE on CUDA "
            f"(torch {torch.__version__} here); use train.attention=auto or sdpa"
        )


def set_attention_impl(model: nn.Module, impl: str) -> None:
    """Choose the attention implementation of every attention module in `model` (auto, sdpa, flex)."""
    impl = str(impl)
    if impl not in IMPLS:
        raise ValueError(f"attention impl {impl!r} unknown; valid: {', '.join(IMPLS)}")
    for m in model.modules():
        if hasattr(m, "attn_impl"):
            m.attn_impl = impl


def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


_block_masks: dict[tuple[int, str], object] = {}


def causal_block_mask(length: int, device: torch.device):
    """The causal `BlockMask` for `length` tokens, built once per (length, device): building one costs more
    than a small model's attention."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = (length, str(device))
    if key not in _block_masks:
        if len(_block_masks) >= 256:  # decoding many prompt lengths: keep the dict bounded
            _block_masks.clear()
        _block_masks[key] = create_block_mask(_causal, None, None, length, length, device=device)
    return _block_masks[key]


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # the unfused eager version materializes the scores: compile it (dynamic shapes after a second length)
    return torch.compile(flex_attention)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    block_mask,
    scale: float | None = None,
) -> torch.Tensor:
    """q, k, v (B, H, T, D); bias (H, T, T), any float dtype -> (B, H, T, D), causal, softmax(s qk + bias) with
    s = scale (None: 1/sqrt(D)). k and v are cast to q's dtype: flex_attention wants one dtype and is not on
    autocast's list, and SAS-P passes its values (the residual stream) in float32 under bf16 autocast."""
    from torch.nn.attention.flex_attention import flex_attention

    k, v = k.to(q.dtype), v.to(q.dtype)

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[h, q_idx, kv_idx].to(score.dtype)

    if torch.compiler.is_compiling():  # already inside a compiled layer: the outer compile fuses it
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    if q.device.type == "cpu":  # CPU: the unfused reference (compiling it takes ~20 s); no backward
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
