"""Evaluation settings: one resolved, validated record of how a run is decoded (checkpoint, weights, offset,
depth, vote, attention temperature, row window), shared by the grid, `solve`, `scripts/scan_k.py` and the Python API.

The grid writes it into each CSV's name (`EvalSettings.tag`) and columns (`EvalSettings.columns`), so rows
made with different settings never mix and a resumed grid only skips cells made with the same ones.

    settings = resolve(run.cfg.model, run.checkpoint, run.weights, k=5, vote_ks=[0, 3, 5])
    with applied(run, settings):  # sets the test-time attention temperature on run.model, then clears it
        ...
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from arith.errors import ConfigError
from arith.files import CONFIG
from arith.schema import AttnScaleMode, AttnScaleWhere, VoteMode

__all__ = [
    "SETTINGS_COLUMNS",
    "EvalSettings",
    "applied",
    "check_label_permutation",
    "check_order_view_items",
    "check_order_votes",
    "default_settings",
    "for_run",
    "resolve",
]

# valid values, from the schema's Enums; this module stays free of torch so that reading grids stays light
# how a grid's rows were made (`EvalSettings.columns`); CSVs written before they were recorded lack them
SETTINGS_COLUMNS = tuple(
    "checkpoint weights k recurrences vote_ks vote_mode attn_scale attn_scale_mode attn_scale_where row_window"
    " order_votes label_permutation order_view_items".split()
)
VOTE_MODES = tuple(m.value for m in VoteMode)
SCALE_MODES = tuple(m.value for m in AttnScaleMode)
SCALE_WHERE = tuple(m.value for m in AttnScaleWhere)


@dataclass(frozen=True)
class EvalSettings:
    checkpoint: str  # the checkpoint folder (its step)
    weights: str  # raw | ema
    k: int  # the evaluation offset (with a vote: the tie-break)
    recurrences: int
    vote_ks: tuple[int, ...] = ()  # () = no vote
    vote_mode: str = ""  # answer | logits; "" without a vote
    attn_scale: float = 1.0
    attn_scale_mode: str = "const"
    attn_scale_where: str = "all"
    row_window: int = 0  # 0 = every key visible (model.row_window)
    order_votes: int = 0  # sorting's vote over orders of the items (arith/eval/order_vote.py); <= 1 = off
    label_permutation: bool = False  # sorting's answers decoded as permutations of the labels (constrain.py)
    order_view_items: int = 0  # the most items one order of that vote shows (sub-arrays); 0 = all, or no vote

    @property
    def offsets(self) -> tuple[int, ...]:
        """Every offset decoding reads: the vote set, or k alone."""
        return self.vote_ks or (self.k,)

    @property
    def scaled(self) -> bool:
        return not (self.attn_scale_mode == "const" and self.attn_scale == 1)

    def columns(self) -> dict[str, str]:
        """The CSV cells of these settings (strings, as written)."""
        return {
            "checkpoint": self.checkpoint,
            "weights": self.weights,
            "k": str(self.k),
            "recurrences": str(self.recurrences),
            "vote_ks": " ".join(map(str, self.vote_ks)),
            "vote_mode": self.vote_mode,
            "attn_scale": repr(float(self.attn_scale)),
            "attn_scale_mode": self.attn_scale_mode,
            "attn_scale_where": self.attn_scale_where,
            "row_window": str(self.row_window),
            "order_votes": str(self.order_votes) if self.order_votes > 1 else "",  # as in CSVs from before it
            "label_permutation": "true" if self.label_permutation else "",
            "order_view_items": str(self.order_view_items) if self.order_view_items else "",
        }

    def tag(self) -> str:
        """File-name part naming every setting, e.g. `step3231_ema_k5_r8_vote0-3-5_attn1.5-log-first`."""
        tag = f"step{self.checkpoint}_{self.weights}_k{self.k}_r{self.recurrences}"
        if self.vote_ks:
            tag += (
                "_vote" + "-".join(map(str, self.vote_ks)) + ("-logits" if self.vote_mode == "logits" else "")
            )
        if self.scaled:
            tag += f"_attn{self.attn_scale:g}"
            tag += "-log" if self.attn_scale_mode == "log" else ""
            tag += "-first" if self.attn_scale_where == "first" else ""
        if self.row_window:
            tag += f"_win{self.row_window}"
        if self.order_votes > 1:
            tag += f"_orders{self.order_votes}"
        if self.order_view_items:
            tag += f"-of{self.order_view_items}"
        if self.label_permutation:
            tag += "_perm"
        return tag

    def describe(self) -> str:
        """One line for the grid's and solve's output, e.g. `checkpoint 3231 (ema), k=5, recurrences=8`."""
        text = f"checkpoint {self.checkpoint} ({self.weights}), k={self.k}, recurrences={self.recurrences}"
        if self.vote_ks:
            text += f", vote over k={list(self.vote_ks)} ({self.vote_mode})"
        if self.scaled:
            text += f", attention x{self.attn_scale:g} ({self.attn_scale_mode}, {self.attn_scale_where})"
        if self.row_window:
            text += f", row window {self.row_window}"
        if self.order_votes > 1:
            text += f", vote over {self.order_votes} orders of the items"
        if self.order_view_items:
            text += f" (sub-arrays of at most {self.order_view_items})"
        if self.label_permutation:
            text += ", answers constrained to permutations of the labels"
        return text

    def decode_args(self) -> dict[str, object]:
        """The decoding keywords of these settings, as `vote.decode` and `quick.evaluate_cells` take them."""
        return {
            "k": self.k,
            "recurrences": self.recurrences,
            "vote_ks": self.vote_ks,
            "vote_mode": self.vote_mode or "answer",
            "order_votes": self.order_votes,
            "label_permutation": self.label_permutation,
            "order_view_items": self.order_view_items,
        }

    def temperature(self, train_len: int | None):
        """The `arith.model.attention.Temperature` to set on the model, or None."""
        if not self.scaled:
            return None
        from arith.model.attention import Temperature

        return Temperature(self.attn_scale, self.attn_scale_mode, self.attn_scale_where, train_len)


def check_order_votes(votes, key: str, task: tuple[str, str] | None = None) -> int:
    """`votes` as an int (None -> 0); a one-line ConfigError naming `key` unless it is an integer >= 0 and, when
    above 1 and `task` = (task name, answer format) is given, the task is sorting with an answer of labels (the
    items of its prompt can be reordered; arith/eval/order_vote.py)."""
    votes = 0 if votes is None else votes
    if isinstance(votes, bool) or not isinstance(votes, int) or votes < 0:
        raise ConfigError(
            f"{key}={votes!r} must be an integer >= 0 (0 or 1 = off: the prompt's own order only)"
        )
    if votes > 1:
        _labels_answer(key, votes, "the items of its prompt can be reordered", task)
    return votes


def check_order_view_items(size, key: str, task: tuple[str, str] | None = None) -> int:
    """`size` as an int (None -> 0); a one-line ConfigError naming `key` unless it is 0 (every item) or an integer
    >= 2 and, when not 0 and `task` = (task name, answer format) is given, the task is sorting with an answer of
    labels (arith/eval/order_vote.py's sub-arrays)."""
    size = 0 if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size == 1:
        raise ConfigError(
            f"{key}={size!r} must be 0 (each order shows every item) or an integer >= 2 (the most items one "
            "order shows: the vote reads sub-arrays of that many)"
        )
    if size:
        _labels_answer(key, size, "a sub-array of its prompt's items is a sorting problem too", task)
    return size


def check_label_permutation(value, key: str, task: tuple[str, str] | None = None) -> bool:
    """`value` as a bool (None -> False); a one-line ConfigError naming `key` unless it is a bool and, when true and
    `task` = (task name, answer format) is given, the task is sorting with an answer of labels (an answer is then a
    permutation of its prompt's labels; arith/eval/constrain.py)."""
    value = False if value is None else value
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false")
    if value:
        _labels_answer(key, "true", "its answer is a permutation of the prompt's labels", task)
    return value


def _labels_answer(key: str, value, why: str, task: tuple[str, str] | None) -> None:
    """Raise a one-line ConfigError unless `task` (None: not checked) is sorting with an answer of labels."""
    name, answer_format = task if task is not None else ("sorting", "direct")
    if name != "sorting" or answer_format == "values":
        what = name if name != "sorting" else "sorting with data.format=values"
        raise ConfigError(
            f"{key}={value} needs sorting with an answer of labels ({why}); this run's task is {what}"
        )


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve(
    model_cfg,
    checkpoint: str,
    weights: str,
    *,
    k: int | None = None,
    recurrences: int | None = None,
    vote_ks: Sequence[int] | None = None,
    vote_mode: str = "answer",
    attn_scale: float = 1.0,
    attn_scale_mode: str = "const",
    attn_scale_where: str = "all",
    row_window: int | None = None,
    order_votes: int | None = None,
    label_permutation: bool | None = None,
    order_view_items: int | None = None,
    task: tuple[str, str] | None = None,
    prefix: str = "eval.",
    check: bool = True,
) -> EvalSettings:
    """Defaults filled in from the run's model config (config.yaml) and every value checked; raises a one-line
    ConfigError naming the key (`prefix` + name) otherwise. check=False trusts the vote set (no torch import:
    the model config was validated when the run was built). task: (task name, answer format) the problems
    are, for the order vote's and the label permutation's checks (`check_order_votes`, `check_label_permutation`);
    None: not checked."""
    k = model_cfg.eval_k if k is None else k
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ConfigError(f"{prefix}k={k!r} must be an integer >= 0")
    if recurrences is None:
        recurrences = model_cfg.eval_recurrences or model_cfg.recurrences
    if not isinstance(recurrences, int) or isinstance(recurrences, bool) or recurrences <= 0:
        raise ConfigError(f"{prefix}recurrences={recurrences!r} must be a positive integer")
    ks = list(getattr(model_cfg, "eval_vote_ks", None) or []) if vote_ks is None else list(vote_ks)
    if check:
        from arith.model.config_checks import check_vote_ks

        key = f"{prefix}vote_ks" if vote_ks is not None else "model.eval_vote_ks"
        ks = check_vote_ks(ks, model_cfg.abs_pos, key)
    vote_mode = str(vote_mode)
    if vote_mode not in VOTE_MODES:
        raise ConfigError(f"{prefix}vote_mode={vote_mode!r} unknown; valid: {', '.join(VOTE_MODES)}")
    if not _number(attn_scale) or not 0 < attn_scale < math.inf:
        raise ConfigError(f"{prefix}attn_scale={attn_scale!r} must be a number > 0 (1 = off)")
    mode, where = str(attn_scale_mode), str(attn_scale_where)
    if mode not in SCALE_MODES:
        raise ConfigError(f"{prefix}attn_scale_mode={mode!r} unknown; valid: {', '.join(SCALE_MODES)}")
    if where not in SCALE_WHERE:
        raise ConfigError(f"{prefix}attn_scale_where={where!r} unknown; valid: {', '.join(SCALE_WHERE)}")
    row_window, window_key = _chosen(row_window, "row_window", model_cfg, "row_window", prefix, 0)
    if not isinstance(row_window, int) or isinstance(row_window, bool) or row_window < 0:
        raise ConfigError(f"{window_key}={row_window!r} must be an integer >= 0 (0 = off)")
    period = getattr(model_cfg, "row_period", 0)
    if period and row_window * 2 >= period:
        raise ConfigError(f"{window_key}={row_window} must be below model.row_period / 2 = {period / 2:g}")
    order_votes, label_permutation, view_items = _sorting_keys(
        model_cfg, order_votes, label_permutation, order_view_items, task, prefix
    )
    if mode == "const" and attn_scale == 1:
        where = "all"  # no scaling anywhere: one setting, however `where` was spelled
    return EvalSettings(
        checkpoint=str(checkpoint),
        weights=str(weights),
        k=int(k),
        recurrences=int(recurrences),
        vote_ks=tuple(ks),
        vote_mode=vote_mode if ks else "",
        attn_scale=float(attn_scale),
        attn_scale_mode=mode,
        attn_scale_where=where,
        row_window=int(row_window),
        order_votes=order_votes if order_votes > 1 else 0,
        label_permutation=label_permutation,
        order_view_items=view_items if order_votes > 1 else 0,
    )


def _chosen(value, name: str, model_cfg, model_name: str, prefix: str, default=None) -> tuple:
    """(the eval.* value where given, else the run's model.<model_name>; the key an error about it names)."""
    if value is not None:
        return value, f"{prefix}{name}"
    return getattr(model_cfg, model_name, default), f"model.{model_name}"


def _sorting_keys(
    model_cfg, order_votes, label_permutation, view_items, task, prefix: str
) -> tuple[int, bool, int]:
    """Sorting's order vote, label permutation and sub-array size (eval.* where given, else the run's
    model.eval_*), checked for `task` (`check_order_votes`, `check_label_permutation`, `check_order_view_items`)."""
    votes, votes_key = _chosen(order_votes, "order_votes", model_cfg, "eval_order_votes", prefix)
    perm, perm_key = _chosen(
        label_permutation, "label_permutation", model_cfg, "eval_label_permutation", prefix, False
    )
    size, size_key = _chosen(view_items, "order_view_items", model_cfg, "eval_order_view_items", prefix)
    return (
        check_order_votes(votes, votes_key, task),
        check_label_permutation(perm, perm_key, task),
        check_order_view_items(size, size_key, task),
    )


def for_run(run, prefix: str = "eval.", **overrides) -> EvalSettings:
    """The settings of a loaded `arith.runs.Run` (its checkpoint and weights) with these overrides."""
    return resolve(run.cfg.model, run.checkpoint, run.weights, prefix=prefix, **overrides)


def default_settings(run_dir: str | Path) -> EvalSettings | None:
    """What `arith.load(run_dir)` and a grid with no eval.* overrides would use, read without loading weights;
    None when run_dir is not a run with a checkpoint."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from arith import checkpoint as ckpts
    from arith.errors import ArithError
    from arith.schema import ModelConfig, PretrainConfig

    path = Path(run_dir) / CONFIG  # read as `runs.load_config` does (without torch)
    try:
        if not path.exists() and (Path(run_dir) / "config.json").exists():  # an export (arith/export.py)
            export = json.loads((Path(run_dir) / "config.json").read_text())
            model = {k: v for k, v in export["model"].items() if k != "vocab_size"}
            model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), model)
            return resolve(model_cfg, str(export["step"]), export["weights"], check=False)
        cfg = OmegaConf.merge(OmegaConf.structured(PretrainConfig), OmegaConf.load(path))
        ckpt = ckpts.resolve(Path(run_dir), None)
        return resolve(cfg.model, ckpt.name, "ema" if ckpts.has_ema(ckpt) else "raw", check=False)
    except (ArithError, OSError, ValueError, KeyError, OmegaConfBaseException):
        return None


@contextlib.contextmanager
def applied(run, settings: EvalSettings):
    """The settings' attention temperature and row window set on run.model for the block (restored afterwards)."""
    from arith.eval.reach import training_needs
    from arith.model.attention import set_attn_temperature

    before = getattr(run.model, "attn_temperature", None)
    window = getattr(run.model, "row_window", 0)
    train_len = training_needs(run.cfg, run.tok)[0] if settings.attn_scale_mode == "log" else None
    set_attn_temperature(run.model, settings.temperature(train_len))
    run.model.row_window = settings.row_window
    try:
        yield settings
    finally:
        run.model.attn_temperature = before
        run.model.row_window = window
