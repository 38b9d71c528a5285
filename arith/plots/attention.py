"""Attention pictures: what each head of each layer and recurrence attends to while a run answers one problem.

    from arith.plots.attention import attention_settings, capture, plot_attention, select, summary_lines
    run = arith.load("runs/quickstart")
    settings = attention_settings(run)                   # the run's evaluation k, recurrences and row window
    maps = capture(run, "123+456", settings)             # greedy answer, then the weights of every attention call
    plot_attention(maps, Path("attention.png"), select(maps.dims, layer=0))
    print("\\n".join(summary_lines(maps)))

The model answers greedily at the evaluation offset (a run's vote set is not used: one picture is one offset),
with the run's evaluation recurrences and row window. Then one uncached forward pass over the prompt and the
tokens the model wrote (all but the last: exactly the queries decoding ran) records, through forward hooks on
each `Attention` module, the input and the `AttnInputs` the model built for every call. `attention_probs`
recomputes softmax(s q.k / sqrt(D) + bias) from those same projections, rotations (RoPE), biases (FIRE), score
functions (ReRoPE), query scales (test-time temperature) and masks (causal, row window), so the picture is what
the model computed; `attended_output` turns the weights back into the module's output (the tests check it to
1e-5). Nothing is patched: the hooks live only inside `recording` and the normal forward path never sees them.

Indices are 0-based everywhere (layer, recurrence, head, digit). Tick labels name each token; a digit also gets
its number (a, b, c, ... in the prompt, y in the answer) and its index in that number, 0 being the least
significant digit (the first one written: operands and answers are reversed), e.g. ``3 a0``.
"""

from __future__ import annotations

import contextlib
import re
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from arith.errors import ConfigError
from arith.eval import settings as eval_settings
from arith.eval.settings import EvalSettings
from arith.model.attention import Attention, AttnInputs, causal_mask
from arith.model.blocks import ShapedAttention, identity_minus_mean
from arith.model.rotary import rotate
from arith.plots.common import save_figure

__all__ = [
    "AttentionMaps",
    "Selection",
    "attended_output",
    "attention_figure",
    "attention_probs",
    "attention_settings",
    "capture",
    "plot_attention",
    "recording",
    "select",
    "summary_lines",
    "token_labels",
]

_WINDOW_GREY = (0.72, 0.72, 0.72, 1.0)
FORMATS = ("png", "pdf", "svg")
_PROMPT_NAMES = string.ascii_lowercase


# ----------------------------------------------------------------------------------------------------------------
# the weights, recomputed from what the model computed


def attention_probs(
    attn: Attention, x: torch.Tensor, inp: AttnInputs
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probs (B, H, T, T) float32, visible (B, H, T, T) bool, v (B, H, T, D)) of one uncached call
    `attn(x, inp)`: the softmax `Attention.attend` (or `explicit_attention`) computes, from the same q, k, v,
    query scale, rotation, bias, score function, difference bias and masks. probs is exactly 0 where visible is
    False."""
    B, T, C = x.shape
    H, D = attn.heads, attn.head_dim
    parts = attn.qkv(x).view(B, T, -1, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # q, k (, v): (B, H, T, D)
    q, k = attn.norm_qk(parts[0], parts[1], inp)
    v = parts[2] if len(parts) == 3 else x.view(B, T, H, D).transpose(1, 2).to(q.dtype)  # SAS: values = input
    scale = D**-0.5 if attn.sdpa_scale is None else attn.sdpa_scale
    if inp.scores is not None:  # the scheme's own q.k (ReRoPE)
        logits = inp.scores(q, k).float() * scale
    else:
        if inp.rot is not None:
            q, k = rotate(q, inp.rot), rotate(k, inp.rot)
        logits = (q.float() @ k.float().transpose(-2, -1)) * scale
        bias = inp.mask if inp.mask is not None and inp.mask.dtype != torch.bool else inp.flex_bias
        if bias is not None:  # FIRE: (H, T, T), -inf above the diagonal on the SDPA path
            logits = logits + bias.to(q.dtype).float()
    if attn.diff is not None:  # model.diff_bias, from the same input
        logits = logits + attn.diff.bias(*attn.diff.scalars(x))
    visible = causal_mask(T, T, x.device)
    if inp.mask is not None and inp.mask.dtype == torch.bool:
        visible = visible & inp.mask
    if inp.allow is not None:  # the row window, causal included: (B, 1, T, T)
        visible = visible & inp.allow
    visible = visible.expand(B, H, T, T)
    probs = logits.masked_fill(~visible, float("-inf")).softmax(dim=-1)
    return probs, visible, v


def attended_output(attn: Attention, x: torch.Tensor, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The module's output (B, T, C) from `attention_probs`' weights and values: the output projection of
    probs @ v, or for shaped attention (SAS) alpha I - gamma C on the input plus beta probs @ v."""
    B, T, C = x.shape
    mixed = probs.to(v.dtype) @ v  # (B, H, T, D)
    if isinstance(attn, ShapedAttention):
        skip = identity_minus_mean(attn.alpha, attn.gamma, T, T)  # (H, T, T)
        y = skip @ v.float() + attn.beta.float()[:, None, None] * mixed.float()
        return y.transpose(1, 2).reshape(B, T, C)
    return attn.proj(mixed.transpose(1, 2).reshape(B, T, C))


@dataclass
class Call:
    """One attention call: layer, recurrence, the module, its input, `AttnInputs` and output."""

    layer: int
    recurrence: int
    module: Attention
    x: torch.Tensor
    inp: AttnInputs
    out: torch.Tensor | None = None


@contextlib.contextmanager
def recording(model):
    """``with recording(model) as calls:`` every attention call of the model's uncached forward passes, in order,
    as `Call`s (the recurrence counted per layer); the hooks are removed on exit."""
    calls: list[Call] = []
    handles = []
    for index, layer in enumerate(model.layers):
        (attn,) = [m for m in layer.modules() if isinstance(m, Attention)]

        def before(module, args, kwargs, index=index):
            bound = dict(zip(("x", "inp", "cache"), args)) | kwargs  # Attention.forward(x, inp, cache=None)
            if bound.get("cache") is not None:
                raise ValueError("attention is recorded on uncached forward passes only (cache=None)")
            done = sum(c.layer == index for c in calls)
            calls.append(Call(index, done, module, bound["x"].detach(), bound["inp"]))

        def after(module, args, kwargs, out, index=index):
            [c for c in calls if c.layer == index][-1].out = out.detach()

        handles.append(attn.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(attn.register_forward_hook(after, with_kwargs=True))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------------------------------------------
# one problem


@dataclass
class AttentionMaps:
    """The attention weights of one answered problem. probs (R, L, H, T, T): recurrence, layer, head, query
    token, key token over the T tokens the model read (the prompt, then what it wrote but the last token)."""

    problem: str
    answer: str  # in natural form (or the raw output, when it cannot be read)
    tokens: list[str]  # the text of each of the T tokens
    labels: list[str]  # tick labels: "3 a0", "+", ...
    digit: list[bool]  # whether each of the T tokens is a digit
    written: list[str]  # labels of what the model wrote (EOS included): token j by query P - 1 + j
    prompt_len: int
    probs: np.ndarray
    visible: np.ndarray  # (T, T) bool: causal and the row window
    settings: EvalSettings
    name: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def dims(self) -> tuple[int, int, int]:
        """(layers, recurrences, heads)."""
        R, L, H = self.probs.shape[:3]
        return L, R, H

    @property
    def causal(self) -> np.ndarray:
        return np.tril(np.ones((len(self.tokens),) * 2, dtype=bool))


def attention_settings(run, k: int | None = None, row_window: int | None = None, recurrences=None):
    """The run's evaluation settings (None: its own k, recurrences, row window), greedy: no vote."""
    return eval_settings.for_run(
        run, prefix="--", k=k, row_window=row_window, recurrences=recurrences, vote_ks=[]
    )


def token_labels(texts: list[str], digit: list[bool], prompt_len: int) -> list[str]:
    """A tick label per token: its text, and for a digit its number (a, b, ... in the prompt, y in the answer)
    and its 0-based index in that number (0 = least significant: numbers are written reversed)."""
    labels, numbers, index, name = [], 0, 0, ""
    for i, (text, is_digit) in enumerate(zip(texts, digit)):
        if not is_digit:
            labels.append(text)
            continue
        if i == 0 or not digit[i - 1] or i == prompt_len:  # a new number
            index, name = 0, "y"
            if i < prompt_len:
                name = _PROMPT_NAMES[numbers] if numbers < len(_PROMPT_NAMES) else f"n{numbers}"
                numbers += 1
        labels.append(f"{text} {name}{index}")
        index += 1
    return labels


def _text(tok, i: int) -> str:
    text = tok.id_to_char.get(int(i), "?")
    return text.strip("[]") if len(text) > 1 else text  # [EOS] -> EOS


def _greedy(run, problem: str, s: EvalSettings) -> tuple[list[int], list[int], str]:
    """(prompt ids, written ids up to EOS, natural answer) of the greedy answer, with solve's checks and its
    warning past the rows training reached."""
    from arith.data.tasks import task_for
    from arith.eval.answer import _read  # solve's reading: DataError / ConfigError as solve gives them
    from arith.eval.decode import generate
    from arith.eval.reach import UntrainedPositionsWarning, untrained_rows

    spec = task_for(run.cfg.data)
    read = _read(run, spec, problem, s.k, {})
    warning = untrained_rows(run.cfg, run.tok, [read.cell], s.k, run_dir=run.run_dir)
    if warning:
        warnings.warn(warning, UntrainedPositionsWarning, stacklevel=3)
    device = next(run.model.parameters()).device
    prompt = torch.as_tensor(read.ids, device=device)[None]
    tok = run.tok
    row = generate(run.model, prompt, read.max_new, tok.eos_id, tok.pad_id, s.recurrences, k=s.k)[0].tolist()
    row = row[: row.index(tok.eos_id) + 1] if tok.eos_id in row else row
    text = tok.decode(row)
    try:
        answer = spec.answer(text) if tok.eos_id in row else f"{text} (no end-of-sequence token)"
    except (ValueError, IndexError):
        answer = text
    return read.ids.tolist(), row, answer


def capture(run, problem: str, settings: EvalSettings | None = None) -> AttentionMaps:
    """The attention weights of `run` (an `arith.runs.Run`) answering `problem` greedily with `settings` (default
    `attention_settings(run)`). Raises DataError / ConfigError as `run.solve` does for a problem it cannot read."""
    s = attention_settings(run) if settings is None else settings
    model = run.model
    with eval_settings.applied(run, s):
        prompt, written, answer = _greedy(run, problem, s)
        ids = torch.as_tensor(prompt + written[:-1], device=next(model.parameters()).device)[None]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), recording(model) as calls:
                model(ids, s.recurrences, k=s.k)
                weights = [attention_probs(c.module, c.x, c.inp)[:2] for c in calls]
        finally:
            model.train(was_training)
    L, R, T = len(model.layers), s.recurrences, ids.shape[1]
    probs = np.zeros((R, L, model.cfg.heads, T, T), dtype=np.float32)
    for c, (p, _) in zip(calls, weights):
        probs[c.recurrence, c.layer] = p[0].float().cpu().numpy()
    tok = run.tok
    texts = [_text(tok, i) for i in ids[0].tolist() + written[-1:]]
    digit = [bool(d) for d in tok.is_digit(np.asarray(prompt + written))]
    labels = token_labels(texts, digit, len(prompt))
    votes = list(getattr(run.cfg.model, "eval_vote_ks", None) or [])
    notes = [f"greedy at k={s.k}: the run's vote over k={votes} is not used"] if votes else []
    return AttentionMaps(
        problem=problem.strip(),
        answer=answer,
        tokens=texts[:T],
        labels=labels[:T],
        digit=digit[:T],
        written=labels[len(prompt) :],
        prompt_len=len(prompt),
        probs=probs,
        visible=weights[0][1][0, 0].cpu().numpy(),
        settings=s,
        name=str(getattr(run.cfg, "name", None) or Path(run.run_dir).name),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------------------------
# what to show


@dataclass(frozen=True)
class Selection:
    layers: list[int]
    recurrences: list[int]
    heads: list[int]

    def suffix(self, dims: tuple[int, int, int]) -> str:
        """File-name part naming what was narrowed, e.g. ``_L0_H1`` (empty for everything)."""
        parts = zip("LRH", (self.layers, self.recurrences, self.heads), dims)
        return "".join(f"_{c}{chosen[0]}" for c, chosen, n in parts if len(chosen) == 1 and n > 1)


def select(
    dims: tuple[int, int, int], layer=None, recurrence=None, head=None, prefix: str = "--"
) -> Selection:
    """Every layer, recurrence and head, or the one given of each; ConfigError (one line) for one out of range.
    dims: (layers, recurrences, heads), e.g. `AttentionMaps.dims`."""
    chosen = []
    for key, value, count, what in zip(
        ("layer", "recurrence", "head"), (layer, recurrence, head), dims, ("layers", "recurrences", "heads")
    ):
        if value is None:
            chosen.append(list(range(count)))
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
            valid = "only 0" if count == 1 else f"0..{count - 1}"
            raise ConfigError(
                f"{prefix}{key} {value!r} is out of range: the model has {count} {what} ({valid})"
            )
        chosen.append([value])
    return Selection(*chosen)


def dims_of(run, settings: EvalSettings) -> tuple[int, int, int]:
    """(layers, recurrences, heads) a capture with these settings will have: `select` before decoding."""
    return len(run.model.layers), settings.recurrences, int(run.model.cfg.heads)


# ----------------------------------------------------------------------------------------------------------------
# the figure


def _panel(ax, maps: AttentionMaps, r: int, layer: int, h: int, cmap, vmax: float, left: bool, bottom: bool):
    """One heatmap: queries down, keys across; future keys white, keys outside the row window grey."""
    T, P = len(maps.tokens), maps.prompt_len
    causal = maps.causal
    image = ax.imshow(
        np.ma.masked_where(~causal, maps.probs[r, layer, h]),
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        interpolation="nearest",
    )
    window = causal & ~maps.visible
    if window.any():
        overlay = np.zeros((T, T, 4))
        overlay[window] = _WINDOW_GREY
        ax.imshow(overlay, interpolation="nearest")
    for line in (ax.axhline, ax.axvline):  # prompt | answer
        line(P - 0.5, color="#ff3030", linewidth=0.7, linestyle="--")
    size = max(3.0, min(8.0, 220.0 / T))
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xticklabels(maps.labels if bottom else [], rotation=90, fontsize=size)
    ax.set_yticklabels(maps.labels if left else [], fontsize=size)
    ax.tick_params(length=1.5, pad=1)
    ax.set_title(f"layer {layer} · recurrence {r} · head {h}", fontsize=9)
    if bottom:
        ax.set_xlabel("key", fontsize=8)
    if left:
        ax.set_ylabel("query", fontsize=8)
    return image


def attention_figure(maps: AttentionMaps, sel: Selection | None = None) -> Figure:
    """A grid of heatmaps: one row per (layer, recurrence) selected, one column per head."""
    sel = select(maps.dims) if sel is None else sel
    pairs = [(layer, r) for layer in sel.layers for r in sel.recurrences]
    rows, cols, T = len(pairs), len(sel.heads), len(maps.tokens)
    side = max(2.2, min(9.0, 0.2 * T + 1.5, 64.0 / rows))
    fig = Figure(figsize=(max(cols * side + 1.5, 7.5), rows * side + 1.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    shown = maps.probs[np.ix_(sel.recurrences, sel.layers, sel.heads)]
    vmax = max(float(shown.max()), 1e-6)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")  # future keys
    for i, (layer, r) in enumerate(pairs):
        for j, h in enumerate(sel.heads):
            image = _panel(axes[i, j], maps, r, layer, h, cmap, vmax, j == 0, i == rows - 1)
    fig.colorbar(image, ax=axes, shrink=min(0.9, 2.5 / rows), aspect=25, label="attention weight")
    window = maps.settings.row_window
    legend = "white: future keys (causal)" + (f" · grey: outside the row window ({window})" if window else "")
    fig.suptitle(
        f"{maps.name}: {maps.problem} = {maps.answer}\n{maps.settings.describe()}\n"
        f"rows: queries · columns: keys · red dashes: end of the prompt\n{legend}",
        fontsize=9,
    )
    return fig


def default_path(run_dir: Path, problem: str, sel: Selection, dims: tuple[int, int, int]) -> Path:
    """``<run>/attention_<problem>[_L0_R1_H0].png``, the problem's odd characters as _."""
    slug = re.sub(r"[^0-9A-Za-z+=-]", "_", problem.strip())[:80] or "problem"
    return Path(run_dir) / f"attention_{slug}{sel.suffix(dims)}.png"


def picture_format(out: Path) -> str:
    """The format an image path asks for (no suffix: png); ConfigError (one line) for one matplotlib's Agg
    canvas does not write here."""
    fmt = Path(out).suffix.lstrip(".").lower() or "png"
    if fmt not in FORMATS:
        raise ConfigError(
            f"{out}: cannot write a .{fmt} picture; name a {', '.join('.' + f for f in FORMATS)} file"
        )
    return fmt


def plot_attention(maps: AttentionMaps, out: Path, sel: Selection | None = None) -> Path:
    """Write the figure as ``out`` (.png; .pdf and .svg too); returns the path written."""
    out = Path(out)
    (path,) = save_figure(attention_figure(maps, sel), out.with_suffix(""), (picture_format(out),))
    return path


# ----------------------------------------------------------------------------------------------------------------
# in words


def _top(weights: np.ndarray, labels: list[str], digit: np.ndarray, n: int) -> str:
    """The n operand digits with the most weight, then the weight on all of them and on the other prompt
    tokens (with the heaviest of those)."""
    keys = np.flatnonzero(digit)
    order = keys[np.argsort(-weights[keys], kind="stable")[:n]]
    text = ", ".join(f"{_quote(labels[j])} {weights[j]:.2f}" for j in order) or "no operand digits"
    text += f" · operand digits {weights[keys].sum():.2f}"
    others = np.flatnonzero(~digit)
    if others.size:
        most = others[np.argmax(weights[others])]
        text += f" · other prompt tokens {weights[others].sum():.2f} (most: {_quote(labels[most])} {weights[most]:.2f})"
    return text


def _quote(label: str) -> str:
    """``3 a0`` -> ``a0 '3'``; ``+`` -> ``'+'``."""
    text, _, name = label.partition(" ")
    return f"{name} '{text}'" if name else f"'{text}'"


def summary_lines(maps: AttentionMaps, top: int = 3, per_recurrence: bool = False) -> list[str]:
    """For each token the model wrote, the operand digits the query that wrote it attends to most, averaged over
    heads, per layer, at the last recurrence (per_recurrence: at each), with the weight on all operand digits and
    on the other prompt tokens."""
    L, R, H = maps.dims
    P = maps.prompt_len
    digit = np.asarray(maps.digit[:P], dtype=bool)
    recs = list(range(R)) if per_recurrence else [R - 1]
    where = "each recurrence" if per_recurrence else f"recurrence {R - 1} (the last of {R})"
    lines = [
        f"{maps.problem} = {maps.answer}  ({'; '.join([maps.settings.describe(), *maps.notes])})",
        f"operand digits each written token's query attends to most: mean over {H} heads, {where}",
    ]
    for j, label in enumerate(maps.written):
        q = P - 1 + j
        lines.append(f"writes {_quote(label)} from query {q} {_quote(maps.labels[q])}:")
        for r in recs:
            for layer in range(L):
                weights = maps.probs[r, layer, :, q, :P].mean(axis=0)
                at = f"layer {layer}" + (f" recurrence {r}" if per_recurrence else "")
                lines.append(f"    {at}: {_top(weights, maps.labels, digit, top)}")
    return lines
