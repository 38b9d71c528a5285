"""Position schemes in two slots, one registry each (SPEC, "Our design"): a scheme is a class registered under
its name (the schema's `AbsPos` / `RelPos`); the model, attention and the run checks ask it, never its name.

* ``ABS_POS``: `AbsSlot` subclasses, built as ``cls(model_cfg, tok)``, that add ``embed(positions(ids, k))`` to
  the token embedding; ``takes_offset``: whether the offset k moves their rows; ``top_row``: the highest row a
  sequence reads (`check_positions` compares it with model.max_pos before any work).
* ``REL_POS``: `RelSlot` subclasses, built as ``cls(model_cfg)``, that act inside attention on integer query and
  key positions (``position_fn``: so KV-cached decoding can pass the absolute position of new tokens), giving it a
  q/k rotation (``rotary``), an additive ``(H, Tq, Tk)`` bias (``bias``) or their own ``scores`` (ReRoPE).
* ``left_pad`` (opt-in): given each row's PADs at its left (``positions(ids, k, pad)``; relative: (B, T) positions
  shifted by them), a left-padded row gets what it gets alone, so `solve_many` batches prompts of many lengths.

Unknown names raise `ConfigError` listing the valid ones, so a typo never silently means "no positions".
docs/EXTENDING.md shows how to add one. The absolute schemes live here; the relative slot's interface is in
relative.py, its schemes in rotary.py (RoPE, ReRoPE, `rotate`) and fire.py (FIRE), all re-exported here."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from arith.errors import ConfigError
from arith.model.fire import FIRE
from arith.model.relative import NoRel, RelSlot
from arith.model.rotary import ReRoPE, RoPE, rotate  # noqa: F401  (rotate: re-exported)

POS_TABLES = ("learned", "orthogonal", "fixed")  # model.pos_table: how a position table starts, if it trains


def fits(max_pos: int, top: int, why: str) -> None:
    """The one capacity check of a position table: raise unless row `top` exists."""
    if top >= max_pos:
        raise ConfigError(f"model.max_pos={max_pos} too small: positions up to {top} needed ({why})")


# ============================================================================ absolute slot
class AbsSlot(nn.Module):
    """The absolute slot's interface (see the module docstring); the default adds nothing (NoPE)."""

    takes_offset = False  # the offset k moves the rows read
    per_example = False  # training draws one offset per example, not one per batch
    left_pad = False  # positions(ids, k, pad) gives a left-padded row its rows alone (module docstring)

    def __init__(self, cfg, tok=None):
        super().__init__()
        self.width, self.max_pos, self.max_k = cfg.width, cfg.max_pos, cfg.max_k
        self.k_per_example = self.per_example or bool(getattr(cfg, "k_per_example", False))

    @classmethod
    def top_row(cls, cfg, max_tokens: int, max_digits: int, k: int) -> tuple[int, str] | None:
        """(highest row read, what needs it) by sequences of these lengths at offset k; None without a table."""
        return None

    def positions(self, ids: torch.Tensor, k=0, pad=None) -> torch.Tensor:
        return torch.zeros_like(ids)

    def embed(self, pos: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*pos.shape, self.width, device=pos.device)

    def forward(self, ids: torch.Tensor, k=0) -> torch.Tensor:
        return self.embed(self.positions(ids, k))

    def training_offset(self, batch: int):
        """A training offset from torch's global RNG, uniform in 0..max_k: one int for the batch (SPEC), or a (batch,
        1) tensor, one per example (Coupling, model.k_per_example); drawn for every scheme (the same RNG stream)."""
        if self.k_per_example:
            return torch.randint(0, self.max_k + 1, (batch, 1))
        return int(torch.randint(0, self.max_k + 1, ()).item())

    def init_table(self, pos_table: str, std: float) -> None:
        """model.pos_table: orthonormal rows of `self.table` (if any) scaled to the norm of a normal(0, std) row."""
        table = getattr(self, "table", None)
        if table is None or pos_table == "learned":
            return
        with torch.no_grad():
            nn.init.orthogonal_(table.weight)
            norm = table.weight.norm(dim=1, keepdim=True)
            table.weight.mul_(std * math.sqrt(table.weight.shape[1]) / norm)
        table.weight.requires_grad_(pos_table != "fixed")


class NoPE(AbsSlot):
    """No absolute positions (the slot's default): nothing to shift under left padding."""

    left_pad = True


class LearnedPos(AbsSlot):
    """GPT-style learned absolute positions: token t (0-based) reads row t. The offset k is ignored. pad (B,): row
    b's token t reads row t - pad[b] (PADs row 0); the table check, on the whole width, assumes a row without PAD."""

    left_pad = True

    def __init__(self, cfg, tok=None):
        super().__init__(cfg)
        self.table = nn.Embedding(cfg.max_pos, cfg.width)

    @classmethod
    def top_row(cls, cfg, max_tokens, max_digits, k):
        return max_tokens - 1, f"sequences of {max_tokens} tokens"

    def positions(self, ids: torch.Tensor, k=0, pad=None) -> torch.Tensor:
        B, T = ids.shape
        fits(self.max_pos, T - 1, f"sequence length {T}")
        pos = torch.arange(T, device=ids.device).expand(B, T)
        return pos if pad is None else (pos - pad[:, None]).clamp(min=0)

    def embed(self, pos: torch.Tensor) -> torch.Tensor:
        return self.table(pos)


def digit_table(tok) -> torch.Tensor:
    """Bool lookup table over token ids: True at the tokenizer's digits (a buffer, not part of checkpoints)."""
    lut = torch.zeros(max(tok.digit_ids) + 1, dtype=torch.bool)
    lut[torch.as_tensor(list(tok.digit_ids))] = True
    return lut


def digit_values(tok) -> torch.Tensor:
    """Float lookup table over token ids: each digit's value (the tokenizer lists its digits 0-9 in order), 0 at
    every other token (a buffer, not part of checkpoints)."""
    table = torch.zeros(max(tok.digit_ids) + 1)
    table[torch.as_tensor(list(tok.digit_ids))] = torch.arange(len(tok.digit_ids), dtype=torch.float32)
    return table


def is_digit(lut: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, T) ids -> bool, True at digits (ids past the table are not digits)."""
    return lut[ids.clamp(max=lut.numel() - 1)] & (ids < lut.numel())


def abacus_positions(is_digit: torch.Tensor) -> torch.Tensor:
    """1-based index of each digit within its maximal run of digits; 0 for non-digits.

    Vectorized: c = running count of digits; at every non-digit remember c (cummax carries the last one
    forward); a digit's index is c minus the count remembered at the last non-digit before it.
    """
    d = is_digit.long()  # (B, T)
    count = d.cumsum(dim=1)  # (B, T)
    at_breaks = torch.where(is_digit, torch.zeros_like(count), count)  # counts frozen at non-digits
    run_base = at_breaks.cummax(dim=1).values  # (B, T) digits counted before the current run
    return (count - run_base) * d


def describe_offset(k) -> str:
    """An offset for a message: an int as is, per-example offsets (a (B, 1) tensor) as their range (host reads:
    for error messages only)."""
    if torch.is_tensor(k) and k.numel() > 1:
        return f"{int(k.min())}..{int(k.max())} per example"
    return str(int(k))


class RowWatch:
    """The range check of a position table, deferred: the highest row asked for stays on the device (a running
    max, no host sync), the rows are clamped into the table meanwhile (so that CUDA never sees an out-of-range
    index), and the owner reads it at a host sync it makes anyway (`read`, then `check`): the training loop at its
    logging steps and before every save, greedy decoding with its per-token stop test. Nothing an out-of-range
    step computed is kept: the owner raises before using it."""

    def __init__(self, max_pos: int):
        self.max_pos = max_pos
        self.top: torch.Tensor | None = None  # int64 scalar on the positions' device

    def note(self, pos: torch.Tensor) -> None:
        top = pos.max()
        self.top = top if self.top is None else torch.maximum(self.top, top)

    def overflow(self, device=None) -> torch.Tensor:
        """float32 scalar on the device, 1 when a row past the table was asked for (to read with other values in
        one host sync)."""
        if self.top is None:
            return torch.zeros((), device=device)
        return (self.top >= self.max_pos).float()

    def highest(self) -> int:
        """The highest row asked for so far (a host sync); -1 when none."""
        return -1 if self.top is None else int(self.top)

    def check(self, what: str, top: int | None = None) -> None:
        """Raise ConfigError when a row past the table was asked for; `top`: the highest row, if already read."""
        top = self.highest() if top is None else top
        fits(self.max_pos, top, what)


def watched(model: nn.Module) -> list[AbsSlot]:
    """The position modules of `model` whose range check a `RowWatch` can take over (Abacus, coupling)."""
    return [m for m in model.modules() if isinstance(m, AbacusPos)]


class watch_rows:
    """``with watch_rows(model) as watch:`` the range check of every Abacus table in `model` deferred to `watch`
    (a `RowWatch`, None when the model has none) for the duration; the previous state comes back after (nested
    uses, e.g. decoding inside training, each keep their own)."""

    def __init__(self, model: nn.Module):
        self.slots = watched(model)
        self.watch = RowWatch(self.slots[0].max_pos) if self.slots else None

    def __enter__(self) -> RowWatch | None:
        self.saved = [slot.watch for slot in self.slots]
        for slot in self.slots:
            slot.watch = self.watch
        return self.watch

    def __exit__(self, *exc) -> None:
        for slot, old in zip(self.slots, self.saved):
            slot.watch = old


class AbacusPos(LearnedPos):
    """Abacus embedding (McLeish et al. 2024, arXiv 2405.17399, SPEC "Abacus embedding").

    Row 0 is the non-digit row; a digit at 1-based index i in its number reads row i + k, where k is one
    offset shared by the batch (random in training, fixed at evaluation; the caller picks it). PAD is not a
    digit, so left padding moves no row (`pad` is not needed).
    """

    takes_offset = True

    def __init__(self, cfg, tok):
        super().__init__(cfg)
        self.period = int(getattr(cfg, "row_period", 0))  # > 0: rows wrap, 1 + (i - 1 + k) mod period
        self.register_buffer("digit_lut", digit_table(tok), persistent=False)  # from the tokenizer
        self.watch: RowWatch | None = None  # set by `watch_rows`: the range check deferred, no host sync

    @classmethod
    def top_row(cls, cfg, max_tokens, max_digits, k):
        period = getattr(cfg, "row_period", 0)
        if period and max_digits + k > period:
            return period, f"model.row_period {period}"
        return max_digits + k, f"max digits {max_digits} + k {k}"

    def is_digit(self, ids: torch.Tensor) -> torch.Tensor:
        return is_digit(self.digit_lut, ids)

    def positions(self, ids: torch.Tensor, k=0, pad=None) -> torch.Tensor:
        pos = abacus_positions(self.is_digit(ids))
        pos = pos + k * (pos > 0)  # the offset moves digits only; non-digits keep row 0
        if self.period:  # cyclic rows: every number length reads rows 1..period only
            pos = torch.where(pos > 0, (pos - 1) % self.period + 1, pos)
        if not pos.numel() or torch.compiler.is_compiling():
            # skipped inside torch.compile (it would break the graph): training checks the table up front
            return pos
        if self.watch is not None:  # deferred (`RowWatch`): no host sync here; its owner reads it at its own
            self.watch.note(pos)
            return pos.clamp(max=self.max_pos - 1)  # an out-of-range row would be a device assert on CUDA
        # one host sync per call (direct calls of the model): an out-of-range row is a device assert on CUDA, not
        # an error. The message (and k, maybe a (B, 1) tensor) is formatted only when the check fails.
        top = int(pos.max())
        if top >= self.max_pos:
            fits(self.max_pos, top, f"max digits + k, k={describe_offset(k)}")
        return pos


class CouplingPos(AbacusPos):
    """Position Coupling (Cho et al. 2024, arXiv 2405.20671): tokens of equal significance share one id.

    In our formats every number is stored least-significant digit first, so "significance within the
    number" is exactly Abacus's index within the run of digits: for `a+b=c` the j-th digit of a, of b and of
    the answer all read row j + offset. What Cho et al. do differently is the random start: one offset per
    *example* in training (the caller passes k as a (B, 1) tensor), not one per batch; evaluation uses one
    int like Abacus. Their zero-padding of operands and their ids for `+` and `=` are not copied: our data
    carries no padding, and non-digits keep row 0 (which also keeps a token's id independent of the
    tokens after it, so KV-cached decoding continues exactly).
    """

    per_example = True


ABS_POS: dict[str, type[AbsSlot]] = {
    "none": NoPE,
    "learned": LearnedPos,
    "abacus": AbacusPos,
    "coupling": CouplingPos,
}


def offset_schemes() -> str:
    """The position schemes that take an offset k, for error messages: "abacus or coupling"."""
    return " or ".join(name for name, cls in ABS_POS.items() if cls.takes_offset)


def scheme(registry: dict, cfg, key: str):
    """What `registry` (a dict, or a tuple of names) holds under cfg.<key>; an unknown name raises naming the
    valid ones."""
    name = getattr(cfg, key)
    if name not in registry:
        raise ConfigError(f"model.{key}={name!r} unknown; valid: {', '.join(registry)}")
    return registry[name] if isinstance(registry, dict) else name


def build_abs_pos(cfg, tok) -> AbsSlot:
    return scheme(ABS_POS, cfg, "abs_pos")(cfg, tok)


# ============================================================================ relative slot
# the interface in relative.py, the schemes in rotary.py and fire.py; imported here for REL_POS and re-exported

REL_POS: dict[str, type[RelSlot]] = {"none": NoRel, "rope": RoPE, "fire": FIRE, "rerope": ReRoPE}


def build_rel_pos(cfg) -> RelSlot:
    return scheme(REL_POS, cfg, "rel_pos")(cfg)


def check_positions(cfg, max_tokens: int, max_digits: int, training: bool, k: int | None = None) -> None:
    """Raise ConfigError before any work when the position schemes cannot hold the longest sequence.

    max_tokens: longest sequence (prompt + answer + EOS); max_digits: most digits in one number;
    k: the offset used at evaluation (None -> model.eval_k); training uses the largest, model.max_k.
    """
    offset = cfg.max_k if training else (cfg.eval_k if k is None else k)
    top = scheme(ABS_POS, cfg, "abs_pos").top_row(cfg, max_tokens, max_digits, offset)
    if top is not None:
        fits(cfg.max_pos, *top)
    scheme(REL_POS, cfg, "rel_pos").check(cfg, max_tokens, training)


def position_rows(cfg, max_tokens: int, max_digits: int, k: int) -> int | None:
    """The highest table row read by sequences of max_tokens tokens whose longest number has max_digits digits, at
    offset k (training: the longest training ones at model.max_k); None for schemes without a table."""
    top = scheme(ABS_POS, cfg, "abs_pos").top_row(cfg, max_tokens, max_digits, k)
    return None if top is None else top[0]
