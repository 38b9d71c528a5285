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
docs/EXTENDING.md shows how to add one."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from arith.errors import ConfigError

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
def _counted(length: int, start: int, cached: bool, training: bool, device):
    k_pos = torch.arange(start + length, device=device)
    return k_pos[start:], k_pos


class RelSlot(nn.Module):
    """The relative slot's interface (see the module docstring); the default gives attention nothing."""

    keeps_init = False  # its parameters keep their own init instead of the model's normal(0, 0.02)
    left_pad = False  # takes (B, T) positions shifted by each row's left PADs (module docstring)

    def __init__(self, cfg=None):
        super().__init__()

    @classmethod
    def check(cls, cfg, max_tokens: int, training: bool) -> None:
        """Raise ConfigError before any work when sequences of max_tokens tokens cannot be positioned."""

    @classmethod
    def position_fn(cls, cfg):
        """(length, start, cached, training, device) -> (query positions (T,), key positions (start + T,)) of a
        forward pass, shared by every layer; built once per model, so that forward reads no config."""
        return _counted

    def rotary(self, pos: torch.Tensor):
        return None

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return None

    def scores(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        return None


class NoRel(RelSlot):
    """No relative positions (the slot's default): attention's key padding mask is all left padding needs."""

    left_pad = True


def rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply a rotary (cos, sin) of shape (T, D) or (B, 1, T, D) to x (B, H, T, D); in float32, returned as x's dtype."""
    cos, sin = rot
    if cos.shape[-1] < x.shape[-1]:  # partial rotary: only the first dims of each head turn, the rest pass
        d = cos.shape[-1]
        return torch.cat((rotate(x[..., :d], rot), x[..., d:]), dim=-1)
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)  # (B, H, T, D/2) each: rotate-half pairing (i, i + D/2)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class RoPE(RelSlot):
    """Rotary position embedding (Su et al. 2021, arXiv 2104.09864): q and k rotated by their absolute index.

    `fraction` < 1 rotates only the first `fraction` of each head's dims (GPT-NeoX-20B, Black et al. 2022,
    used 0.25), with frequencies spread over the rotated dims; the others carry content only. Built from the
    model config by the registry, or as ``RoPE(head_dim, base, fraction)``.
    """

    left_pad = True

    def __init__(self, head_dim, base: float = 10000.0, fraction: float = 1.0):
        super().__init__()
        if not isinstance(head_dim, int):  # the model config
            cfg = head_dim
            head_dim, base, fraction = cfg.width // cfg.heads, cfg.rope_base, cfg.rope_fraction
        if head_dim % 2:
            raise ConfigError(
                f"model.rel_pos=rope needs an even head dim (model.width / model.heads), got {head_dim}"
            )
        rot_dim = int(head_dim * fraction) // 2 * 2  # even: dims turn in pairs
        if not 0 < fraction <= 1 or rot_dim < 2:
            raise ConfigError(
                f"model.rope_fraction={fraction!r} must be in (0, 1] and rotate at least 2 of the "
                f"{head_dim} dims of a head"
            )
        inv_freq = base ** (-torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim)  # (R/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def rotary(self, pos: torch.Tensor):
        angles = pos.float()[..., None] * self.inv_freq  # (T, R/2), or (B, T, R/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, R), R = rotated dims (D unless partial)
        if angles.dim() == 3:
            angles = angles[:, None]  # (B, 1, T, R): one rotation per row, for every head
        return angles.cos(), angles.sin()


class ReRoPE(RoPE):
    """ReRoPE (Su 2023, "Rectified Rotary Position Embeddings"): RoPE whose relative distance stops growing.

    The score of query i and key j uses the rotation of distance d = i - j while d < window, and of
    window + (d - window) / k beyond it ("leaky ReRoPE"; k = 0 means slope 0: every distance >= window
    reads as window). So a model meets no distance it was not trained on, however long the sequence; with
    window >= the training length, training is exactly RoPE. A clipped distance is not a difference of two
    absolute rotations, so `scores` computes two score matrices, both as rotated q . rotated k:
        near: q at i,                         k at j        -> distance i - j
        far:  q at i/k + window (1 - 1/k),    k at j/k      -> distance window + (i - j - window) / k
    and keeps `near` inside the window, `far` outside (with 1/k read as 0 when k = 0). The KV cache keeps
    unrotated keys for this, since each key is rotated twice.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        window, leaky_k = cfg.rerope_window, cfg.rerope_leaky_k
        if window < 1 or leaky_k < 0:
            raise ConfigError(
                f"model.rerope_window={window!r} must be >= 1 and model.rerope_leaky_k={leaky_k!r} >= 0"
            )
        self.window, self.slope = window, (1.0 / leaky_k if leaky_k > 0 else 0.0)

    def rotary(self, pos: torch.Tensor):
        return None  # the rotations depend on the (query, key) pair: see `scores`

    def windows(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> tuple:
        """((q rot, k rot) near, (q rot, k rot) far, in_window (Tq, Tk) bool), rots as `RoPE.rotary`."""
        q_pos, k_pos = q_pos.float(), k_pos.float()
        near = (RoPE.rotary(self, q_pos), RoPE.rotary(self, k_pos))
        far_q = q_pos * self.slope + self.window * (1.0 - self.slope)
        far = (RoPE.rotary(self, far_q), RoPE.rotary(self, k_pos * self.slope))
        in_window = (q_pos[..., :, None] - k_pos[..., None, :]) < self.window  # (Tq, Tk) or (B, Tq, Tk)
        return near, far, in_window if in_window.dim() == 2 else in_window[:, None]

    def scores(self, q_pos: torch.Tensor, k_pos: torch.Tensor):
        (q_near, k_near), (q_far, k_far), in_window = self.windows(q_pos, k_pos)

        def score(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:  # (B, H, Tq, D), (B, H, Tk, D) unrotated
            near = rotate(q, q_near) @ rotate(k, k_near).transpose(-2, -1)  # (B, H, Tq, Tk)
            far = rotate(q, q_far) @ rotate(k, k_far).transpose(-2, -1)  # (B, H, Tq, Tk)
            return torch.where(in_window, near, far)

        return score


class FIRE(RelSlot):
    """Functional Interpolation for Relative Positions (Li et al. 2023, arXiv 2310.04418).

    b(i, j) = MLP(psi(i - j) / psi(max(L, i))) per head, psi(x) = log(c x + 1). The constants c = 0.1,
    L = 512 and the 32-unit hidden layer are the paper's defaults. c and L are used through abs() so they stay
    positive whatever the optimizer does. The MLP keeps its biases (and its default init): without them a ReLU
    net of a non-negative scalar could only scale its input. model.fire_max_length > 0: randomized positions.
    Positions of shape (B, T) (left padding: each row's own query positions) give a (B, H, Tq, Tk) bias.
    """

    keeps_init = True
    left_pad = True

    def __init__(self, cfg, hidden: int = 32, c: float = 0.1, threshold: float = 512.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, cfg.heads))
        self.c = nn.Parameter(torch.tensor(c))
        self.threshold = nn.Parameter(torch.tensor(threshold))

    @staticmethod
    def check(cfg, max_tokens, training, max_length=None):
        max_length = cfg.fire_max_length if max_length is None else max_length
        if training and 0 < max_length < max_tokens:
            raise ConfigError(
                f"model.fire_max_length={max_length} too small: training sequences reach {max_tokens} tokens"
            )

    @classmethod
    def position_fn(cls, cfg):
        # randomized positions in training (Ruoss et al. 2023, arXiv 2305.16843; with FIRE: Zhou et al. 2024): a
        # sorted random subset of [0, fire_max_length) instead of 0..length-1, from torch's global RNG
        max_length = int(cfg.fire_max_length)

        def draw(length, start, cached, training, device):
            if not (training and max_length > 0):
                return _counted(length, start, cached, training, device)
            if cached:
                raise ValueError(
                    "randomized FIRE draws new positions per call: decode with the model in eval mode"
                )
            cls.check(None, length, training, max_length)
            # drawn on the host (the checkpointed CPU RNG stream); copied without a host sync
            pos = torch.randperm(max_length)[:length].sort().values.to(device, non_blocking=True)
            return pos, pos

        return draw

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(H, Tq, Tk) float32, also under bf16 autocast: the MLP's input x moves by less than bf16's spacing
        between neighbouring long distances (about 8e-4 per token at 300 tokens against 3.9e-3), so in bf16 runs
        of ~5 distances would share one bias exactly where length generalization is measured."""
        if q_pos.dim() == 2 and bool(q_pos.max() <= self.threshold.abs()):
            # left-padded rows: q - k is every row's own, and max(L, q) = L for every query, so each row's bias is
            # that of the row with the most positions (the unpadded one), computed once: (H, Tq, Tk)
            row = q_pos[:, -1].argmax()
            return self.bias(q_pos[row], k_pos[row])
        with torch.autocast(q_pos.device.type, enabled=False):
            c = self.c.abs()
            i = q_pos.float()[..., :, None]  # (Tq, 1), or (B, Tq, 1)
            # future keys get masked by the caller; clamp so log() stays finite there (and at PADs, i < 0)
            dist = (i - k_pos.float()[..., None, :]).clamp(min=0)  # (Tq, Tk)
            scale = torch.log1p(c * torch.maximum(self.threshold.abs(), i.clamp(min=0)))  # (Tq, 1)
            x = torch.log1p(c * dist) / scale  # (Tq, Tk) in [0, 1] while i <= L
            return self.mlp(x.unsqueeze(-1)).movedim(-1, -3)  # (Tq, Tk, H) -> (H, Tq, Tk)


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
