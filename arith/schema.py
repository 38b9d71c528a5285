"""Typed configuration: dataclasses + Enums under the YAML files in ``arith/config``.

Defaults live here, YAML presets override them, the command line overrides both. OmegaConf validates
Enum fields and rejects unknown keys, so a typo is an error, never a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

# data.name marks the padded format (data.pad_operands) and leaves unpadded names as they were; registered on
# import, so that any code resolving these dataclasses (reports, loads) knows it
if not OmegaConf.has_resolver("arith_pad"):
    OmegaConf.register_new_resolver("arith_pad", lambda pad: "_pad" if pad else "")
# ... and the answer format (data.format): direct names stay as they were, a scratchpad adds "_sp", sorting's
# label_last "_ll", values "_sv" and successor "_su"
_FMT_SUFFIX = {"direct": "", "scratchpad": "_sp", "label_last": "_ll", "values": "_sv", "successor": "_su"}
if not OmegaConf.has_resolver("arith_fmt"):
    OmegaConf.register_new_resolver("arith_fmt", lambda fmt: _FMT_SUFFIX.get(str(fmt), "_sp"))
# ... and a length distribution other than uniform (data.length_power): "_lp1" for power 1, nothing for 0
if not OmegaConf.has_resolver("arith_lp"):
    OmegaConf.register_new_resolver("arith_lp", lambda power: f"_lp{float(power):g}" if float(power) else "")
# ... and close numbers in training (data.close_frac): "_cf0.5" for a half, nothing for 0
if not OmegaConf.has_resolver("arith_cf"):
    OmegaConf.register_new_resolver("arith_cf", lambda frac: f"_cf{float(frac):g}" if float(frac) else "")


def _either(value, default):
    """``${arith.either:a,b}``: a, or b where a is null."""
    return default if value is None else value


if not OmegaConf.has_resolver("arith.either"):  # at import, so any config built from this schema resolves
    OmegaConf.register_new_resolver("arith.either", _either)


class _Choice(str, Enum):
    """A config choice; prints as its value, so run names read `abacus`, not `AbsPos.abacus`."""

    def __str__(self) -> str:
        return self.value


class Task(_Choice):
    addition = "addition"
    subtraction = "subtraction"
    multiplication = "multiplication"
    sorting = "sorting"
    bitwise_or = "bitwise_or"


class AnswerFormat(_Choice):
    """What the model writes after '=' (data.format): the answer alone, or worked steps then the answer; sorting's
    label_last moves each label after its number in the prompt instead, and values writes the sorted items whole."""

    direct = "direct"
    scratchpad = "scratchpad"  # subtraction, multiplication: docs/FORMATS.md
    label_last = "label_last"  # sorting: each label after its number (docs/FORMATS.md)
    values = "values"  # sorting: the answer writes each label with its value (docs/FORMATS.md)
    # sorting: label_last, and half of the training rows start the answer at a given item (docs/FORMATS.md)
    successor = "successor"


class AbsPos(_Choice):
    """Position slot that adds to the token embedding."""

    none = "none"
    learned = "learned"
    abacus = "abacus"
    coupling = "coupling"  # Position Coupling (Cho et al. 2024): Abacus ids, a random start per example


class RelPos(_Choice):
    """Position slot that acts inside attention."""

    none = "none"
    rope = "rope"
    fire = "fire"
    rerope = "rerope"  # RoPE with relative distances clipped at model.rerope_window (Su 2023)


class PosTable(_Choice):
    """How the learned / Abacus position table starts and whether it trains."""

    learned = "learned"  # normal(0, 0.02) rows, trained (the paper's)
    orthogonal = "orthogonal"  # orthonormal rows scaled to the same norm, trained
    fixed = "fixed"  # orthonormal rows, frozen: rows training never reaches look like the ones it did


class Block(_Choice):
    """Layer layout (`arith/model/blocks.py`)."""

    pre_ln = "pre_ln"
    post_ln = "post_ln"
    parallel = "parallel"
    sas_p = "sas_p"


class Optimizer(_Choice):
    adamw = "adamw"
    lion = "lion"
    tiger = "tiger"


class Injection(_Choice):
    none = "none"
    add = "add"


class LengthCode(_Choice):
    """How the length feature codes a number's length L (model.length_code; `numbers.LENGTH_CODES`)."""

    log = "log"  # log(1 + L): the steps between lengths shrink as L grows
    linear = "linear"  # L / 10: every step between lengths the same, with or without the offset


class AuxLoss(_Choice):
    """An auxiliary loss read by a linear probe on the model's last hidden state (model.aux_loss)."""

    none = "none"
    # multiplication, direct format: regress the running sum c^_k = sum_{i+j=k} a_i b_j + carry_{k-1} at the
    # position that writes product digit k (Bai et al. 2025, arXiv 2510.00184)
    running_sum = "running_sum"


class InjectEvery(_Choice):
    recurrence = "recurrence"  # before each block call after the first
    layer = "layer"  # before every layer after the first (the paper: "a copy of the input to each layer")


class AttnImpl(_Choice):
    """How attention applies an additive bias (FIRE); see arith/model/flex.py."""

    auto = "auto"  # FlexAttention on CUDA (torch >= 2.6), SDPA otherwise
    sdpa = "sdpa"  # always SDPA with a dense additive mask (the reference)
    flex = "flex"  # always FlexAttention (on CPU: forward only)


class Device(_Choice):
    """Where a run trains (train.device) and, by default, where it is evaluated after training."""

    auto = "auto"  # $ARITH_DEVICE (cpu or cuda) when set, else CUDA when a GPU is visible, else the CPU
    cpu = "cpu"
    cuda = "cuda"  # one GPU per rank (LOCAL_RANK, modulo the visible ones); an error without one


class VoteMode(_Choice):
    """How test-time ensembling over Abacus offsets combines them (eval.vote_mode, arith/eval/vote.py)."""

    answer = "answer"  # majority vote of the whole decoded answer
    logits = "logits"  # greedy on the mean next-token distribution, at every decoding step


class AttnScaleMode(_Choice):
    """Test-time attention temperature (eval.attn_scale_mode, arith/model/attention.py `Temperature`)."""

    const = "const"  # every q.k logit times eval.attn_scale
    log = "log"  # ... times eval.attn_scale * max(1, log(keys) / log(longest training sequence)) per query


class AttnScaleWhere(_Choice):
    all = "all"  # every attention call
    first = "first"  # the first attention call of each forward pass (first layer, first recurrence)


class Weights(_Choice):
    ema = "ema"  # the moving average (train.ema)
    raw = "raw"  # the trained weights themselves


class SelectTies(_Choice):
    """Which checkpoint a selection tie names best (train.select_ties)."""

    earlier = "earlier"  # the first step to reach the best mean (OOD accuracy can erode later, SPEC Part 5)
    later = "later"  # the last step to reach it: once the selection lengths read 100%, later steps are better trained


class Reduction(_Choice):
    mean = "mean"  # mean over every target token in the batch
    per_sample = "per_sample"  # mean over tokens within a sample, then mean over samples


@dataclass
class ModelConfig:
    width: int = 1024
    heads: int = 16
    ffn: int = 2048  # GLU input width, split into two halves (the original's convention)
    layers: int = 16  # distinct layers in the recurrent block
    recurrences: int = 1  # block applications; 1 = standard transformer
    input_injection: Injection = Injection.none
    # where `add` injects: before each block call (recurrence) or each layer; the same for a 1-layer block,
    # and only `layer` injects anything in a standard (recurrences = 1) transformer
    inject_every: InjectEvery = InjectEvery.recurrence
    abs_pos: AbsPos = AbsPos.abacus
    rel_pos: RelPos = RelPos.none
    max_pos: int = 256  # rows of the learned / Abacus position table
    max_k: int = 100  # Abacus training offset range: k ~ U{0..max_k}
    pos_table: PosTable = PosTable.learned
    eval_k: int = 0  # Abacus offset used at evaluation
    k_per_example: bool = (
        False  # draw the training offset per example instead of once per batch (SPEC: batch)
    )
    fire_max_length: int = 0  # > 0: randomized FIRE, positions drawn from [0, fire_max_length)
    rope_base: float = 10000.0
    rope_fraction: float = 1.0  # share of each head's dims that rotate (GPT-NeoX-20B: 0.25); rope and rerope
    rerope_window: int = 64  # rerope: relative distances >= this window are clipped (or leak, see below)
    rerope_leaky_k: float = 0.0  # rerope: 0 = clip at the window; k > 0 = grow with slope 1/k beyond it
    block: Block = Block.pre_ln
    tie_embeddings: bool = False  # the output head reuses the token embedding matrix
    alpha: float = 1.0  # progressive-loss weight of the random-depth pass
    max_backprop: Optional[int] = None  # None -> recurrences // 2 (at least 1)
    throttle: bool = True  # cap the random-depth pass at `recurrences` (False: may go past it)
    # the full-depth pass runs its first n recurrences without autograd (truncated backprop through the loop, as
    # the progressive loss's random-depth pass does): the same forward, a backward through the last R - n only,
    # so a cheaper step; 0 = backprop through every recurrence (training only)
    detach_recurrences: int = 0
    eval_recurrences: Optional[int] = None  # None -> recurrences
    # test-time ensembling: Abacus offsets whose answers vote (eval.vote_ks overrides); None / [] = off
    eval_vote_ks: Optional[list[int]] = None
    # sorting: orders of each prompt's items whose answers vote pairwise (eval.order_votes overrides; the prompt's own
    # order first, arith/eval/order_vote.py); None / 0 / 1 = off
    eval_order_votes: Optional[int] = None
    # sorting: the most items one order of that vote shows; with fewer than the prompt has, the vote reads sub-arrays
    # of that many items until each pair of items is ordered by eval_order_votes answers (eval.order_view_items
    # overrides; arith/eval/order_vote.py); None / 0 = every item
    eval_order_view_items: Optional[int] = None
    # sorting: each answer decoded as a permutation of its prompt's labels (no label twice, none missing;
    # eval.label_permutation overrides; arith/eval/constrain.py); false = plain greedy decoding
    eval_label_permutation: bool = False
    attn_logit_scale: float = 1.0  # every q.k / sqrt(D) logit times this, in training and evaluation
    # each head's queries and keys RMS-normalized, with a learned gain per channel, before the logits (QK-norm: bounds
    # the attention-logit growth behind loss spikes); off = no parameters, today's logits
    qk_norm: bool = False
    attn_log_n: bool = False  # each head's q times 1 + g_h log(keys seen), g_h learned from 0 (attention.py)
    # a per-head bias a relu(d) + c relu(-d), d = s(key) - r(query) - t, r and s learned linear reads of the tokens,
    # a, c, t learned from 0: a one-sided threshold a dot product cannot express (model/diff_bias.py)
    diff_bias: bool = False
    # diff_bias's a and c start at -this (a bias -g |d|: the reads get a gradient from the first step); 0 = from 0
    diff_bias_init: float = 0.0
    # c alone (the side of keys below the query's scalar) starts at -this instead: a one-sided start, "the nearest key
    # above, none below" (null = diff_bias_init, the symmetric start)
    diff_bias_init_below: Optional[float] = None
    # row window (training and evaluation; eval.row_window overrides): a query sees a digit only when their
    # indices within their numbers differ by at most this many (non-digits always); 0 = off. Addition
    # and OR are local in digit index, so every length then looks like training (docs/RESULTS.md)
    row_window: int = 0
    # cyclic Abacus rows: digit i at offset k reads row 1 + (i - 1 + k) mod row_period (0 = off), so numbers of
    # any length read trained rows; needs row_period > 2 x row_window; max_k = row_period - 1 trains every row
    # equally
    row_period: int = 0
    # each digit also adds a learned embedding of the token that opens its number (the non-digit just before its
    # run of digits; a run at the start of the row has its own): which number a digit belongs to (an operand, a
    # scratchpad line and its multiplier letter) without an attention hop; off = no parameters, today's logits
    opener_embedding: bool = False
    # every non-digit of the prompt (before '=') adds log(1 + L) x a learned vector, L the digit count of the number
    # just before it (sorting's label_last: a label carries its number's length as a quantity that keeps growing
    # past the trained lengths, where the Abacus rows it reads stop at them); digits and the answer add nothing
    length_feature: bool = False
    # the length feature reads L + k instead of L, k the row's Abacus offset (random in 0..max_k in training, eval_k
    # at test), as Abacus indices do: training's offsets cover the lengths that longer numbers read at test, and
    # the order of the lengths in a row is unchanged (needs model.length_feature and an offset-taking abs_pos)
    length_offset: bool = False
    # the length feature's code: log = log(1 + L), linear = L / 10 (a step of one length reads the same at every L,
    # so with the offset every row's lengths compare alike whatever its k)
    length_code: LengthCode = LengthCode.log
    # the length feature reads each number's length against the row's longest: 1 + L_max - L (1 for the longest,
    # 2 for one digit shorter, ...) in place of L, so a comparison of lengths reads the same whatever the row's
    # lengths (sorting: 10-digit arrays compare 10 against 9 as training compared 5 against 4); needs
    # model.length_feature, and neither length_offset nor value_in_length
    length_relative: bool = False
    # every non-digit of the prompt adds m x a learned vector, m = 0.d1 d2 ... dn the top n digits of the number just
    # before it (305 -> 0.305): with the length feature, a label carries its number's value in order as two
    # quantities, the length and the leading digits, whatever the length (an xVal-like value code); 0 = off
    value_feature: int = 0
    # the top digits join the length feature instead of a vector of their own: it reads log(1 + L + 0.d1...dn), one
    # quantity that orders numbers by value across lengths too (needs length_feature and value_feature > 0)
    value_in_length: bool = False
    # with value_in_length: the top digits also keep their vector of their own (m in the length and m x a learned
    # vector, both); without value_in_length they always have it, so true then is an error
    value_vector: bool = False
    # number window: past the prompt (the tokens up to and including '='), a query sees only its own number and
    # the W numbers written before it, with the non-digits between them; 0 = off. A scratchpad's line then reads
    # the previous line as training did, however many lines came before (docs/RESULTS.md, multiplication)
    number_window: int = 0
    # item window: in the prompt (before '='), a query sees only its own number and the non-digits after it (an
    # array item `503:a,`); from '=' on, everything. Each item then reads the same however many came before it
    # (sorting's array axis); false = today's model
    item_window: bool = False
    # answer window: past the prompt, a query sees the prompt and only the W tokens before it (0 = off): each
    # answer step reads the step before it and nothing that counts the steps (sorting: the next label after the
    # last one written, whatever the array's length)
    answer_window: int = 0
    # prompt window: in the prompt (before '='), a query sees only the W tokens up to and including itself (0 =
    # off); from '=' on, everything. With the item window, a label then reads its number's top digits and its
    # length feature, the same however long the number is (sorting's digit axis)
    prompt_window: int = 0
    # item digits (with the item window): in the prompt a digit reads itself and the W - 1 digits below it, a
    # non-digit (':', a label) its number's top W digits (0 = off). Numbers of up to W digits read as without it;
    # a longer one's label reads the top W digits, as a W-digit number's does (sorting's digit axis)
    item_digits: int = 0
    # from '=' on, a query sees none of the prompt's digits, only its non-digits (sorting's labels, which read their
    # numbers through the item window) and the answer so far; false = today's model
    hide_prompt_digits: bool = False
    # auxiliary loss (training only): a linear probe on the last hidden state regresses a per-token target the
    # task defines (arith/aux_loss.py), weighted by aux_weight beside the LM loss; none = no probe, today's model
    aux_loss: AuxLoss = AuxLoss.none
    aux_weight: float = 1.0
    dropout: float = 0.0


@dataclass
class DataConfig:
    task: Task = Task.addition
    max_len: int = 20  # operand lengths 1..max_len (sorting: max digits)
    max_len_b: Optional[int] = None  # second operand (sorting: max array length); None -> max_len
    n_train: int = 20_000_000
    test_frac: float = 0.01
    seed: int = 0
    streaming: bool = False  # True: make batches on the fly, nothing on disk
    # Position Coupling's format (Cho et al. 2024): operands zero-padded to one length, the answer to that
    # length + 1 (addition; multiplication: 2x); the problems themselves are unchanged
    pad_operands: bool = False
    # direct: the answer alone (the paper's format); scratchpad: worked steps, then the answer (the tasks that
    # have one: subtraction; docs/FORMATS.md). solve, the grid and the API read and return the natural answer
    format: AnswerFormat = AnswerFormat.direct
    bucket: int = 1  # > 1: sort each group of this many batches by length, so batches carry little padding
    # training lengths: P(l) proportional to l ** length_power on each axis (1..max_len, 1..max_len_b); 0 = uniform
    # (the paper's), 1 = as many rows of each length as of tokens of it, more of the longest cells
    length_power: float = 0.0
    # sorting: the share of training rows (of >= 2 numbers, >= 2 digits) whose numbers all have the row's most
    # digits and share their top P digits (P uniform in 1..digits - 1), so that neighbours in the sorted order are
    # close in value; 0 = off (the uniform draw). Evaluation rows are never changed
    close_frac: float = 0.0
    root: str = "${oc.env:ARITH_DATA,data}"  # where on-disk datasets live
    # `either`, not oc.select, whose default applies only to a missing key: a null max_len_b read "None"
    name: str = "${data.task}_${data.max_len}x${arith.either:${data.max_len_b},${data.max_len}}_n${data.n_train}_s${data.seed}${arith_pad:${data.pad_operands}}${arith_fmt:${data.format}}${arith_lp:${data.length_power}}${arith_cf:${data.close_frac}}"


@dataclass
class TrainConfig:
    steps: Optional[int] = None  # stop after this many optimizer steps ...
    budget_minutes: Optional[float] = None  # ... or after this much wall-clock, whichever ends first
    batch_size: int = 128  # global batch
    lr: float = 1e-4
    optimizer: Optimizer = Optimizer.adamw
    betas: tuple[float, float] = (0.9, 0.98)  # lion: (beta1, beta2); tiger: its one beta is betas[1]
    weight_decay: float = 0.01
    clip: float = 0.5
    embedding_lr_scale: float = 1.0  # lr multiplier of the token and position tables (0 = frozen)
    warmup: float = 0.1  # fraction of the run
    cooldown: float = 0.1  # fraction of the run
    mask_before_equals: bool = True  # answer-only loss
    loss_reduction: Reduction = Reduction.mean
    seed: int = 0
    # auto: $ARITH_DEVICE when set (the test suite pins cpu there), else CUDA when a GPU is visible. Not part of a
    # run's identity: a run started on the CPU may resume on a GPU (bf16, fused AdamW there) and back
    device: Device = Device.auto
    compile: bool = False  # torch.compile each layer of the block (in place; works under DDP as is)
    # the attention kernel: FlexAttention (FIRE, CUDA), short-row CPU training attention or SDPA (model/flex.py)
    attention: AttnImpl = AttnImpl.auto
    bf16: bool = True  # bf16 autocast on CUDA (and on CPU when cpu_bf16)
    # bf16 autocast on the CPU too: true, false, or null (auto: on where the CPU has AMX tiles, arith.dist.use_bf16)
    cpu_bf16: Optional[bool] = False
    threads: int = 0  # torch CPU threads; 0 = torch's default
    # the last block application computes only the answer positions the loss reads (the same loss, less work):
    # true, false, or null (auto: on a CPU without compiled layers, arith.step.trims); self-improvement follows it
    trim_prompt: Optional[bool] = None
    save_every_minutes: float = 30.0
    save_every_steps: int = 0  # 0 = off; extra trigger, handy in tests
    keep_last: int = 3
    # selection: every select_every steps (0 = off), greedy exact match on the diagonal cells select_lens
    # (longer than training, shorter than anything reported), select_n problems each; a new best mean is saved
    # and `checkpoints/best` points at it (arith.load's default)
    select_every: int = 0
    select_lens: list[int] = field(default_factory=list)
    select_n: int = 100
    select_seed: int = 9001  # problems of their own: neither the training data nor the grid's (eval.seed)
    # a tie with the best mean: keep the earlier step (best) or take the later one
    select_ties: SelectTies = SelectTies.earlier
    ema: float = 0.0  # decay of a moving average of the weights (0 = off); saved as ema.safetensors
    log_every: int = 25
    wandb: bool = False
    wandb_project: str = "arith"
    tensorboard: bool = False  # also log the metrics.jsonl scalars to <run_dir>/tensorboard/
    progress: bool = True


@dataclass
class EvalConfig:
    a_lens: list[int] = field(default_factory=lambda: [1, 100])  # inclusive range
    b_lens: Optional[list[int]] = None  # None -> a_lens
    square: Optional[list[int]] = None  # [lo, hi]: only the diagonal cells lo..hi
    n_per_cell: int = 100
    batch_size: int = 256
    shard: int = 0
    num_shards: int = 1
    recurrences: Optional[int] = None  # None -> the model's eval_recurrences
    k: Optional[int] = None  # Abacus offset at evaluation; None -> model.eval_k
    vote_ks: Optional[list[int]] = None  # offsets that vote (arith/eval/vote.py); None -> model.eval_vote_ks
    vote_mode: VoteMode = VoteMode.answer
    # sorting: orders of the items that vote (arith/eval/order_vote.py); None -> model.eval_order_votes; 0 / 1 = off
    order_votes: Optional[int] = None
    # sorting: the most items one order of that vote shows (sub-arrays); None -> model.eval_order_view_items; 0 = all
    order_view_items: Optional[int] = None
    # sorting: each answer a permutation of its prompt's labels (arith/eval/constrain.py); None ->
    # model.eval_label_permutation
    label_permutation: Optional[bool] = None
    attn_scale: float = 1.0  # test-time attention temperature (1 with const = off)
    attn_scale_mode: AttnScaleMode = AttnScaleMode.const
    attn_scale_where: AttnScaleWhere = AttnScaleWhere.all
    row_window: Optional[int] = None  # None -> model.row_window; 0 = off; any run can be decoded with one
    checkpoint: Optional[str] = None  # best | latest | a step; None -> best when the run has one, else latest
    weights: Optional[Weights] = None  # ema | raw; None -> ema when the checkpoint holds one, else raw
    seed: int = 1234
    cache: bool = True
    out: str = "eval"  # CSV folder inside the run dir


@dataclass
class PretrainConfig:
    name: str = "${data.task}${data.max_len}_${model.abs_pos}-${model.rel_pos}_${model.layers}x${model.recurrences}_w${model.width}_s${train.seed}"
    runs_root: str = "${oc.env:ARITH_RUNS,runs}"
    run_dir: str = "${runs_root}/${name}"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # after training: greedy exact-match per operand length up to this many digits (0 = skip)
    check_lens: int = 0
    check_n: int = 50


@dataclass
class DataGenConfig:
    data: DataConfig = field(default_factory=DataConfig)


@dataclass
class EvalAppConfig:
    run: str = MISSING  # run directory
    eval: EvalConfig = field(default_factory=EvalConfig)
    task: Optional[Task] = None  # None -> the run's training task


class Which(_Choice):
    best = "best"
    latest = "latest"


@dataclass
class SelfImproveConfig:
    """`python scripts/self_improve.py run=runs/NAME rounds=R` (arith/self_improve.py): each round the model
    labels problems just past its frontier with its own vote (and the labelers'), keeps the confident answers
    and trains on them. No true answer steers training; they only feed the per-round report."""

    run: str = MISSING  # the starting run (trained with pretrain.py)
    checkpoint: Which = Which.best  # of the starting run (best falls back to latest when it has none)
    out: Optional[str] = None  # the child run directory; None -> <run>_si beside the run
    # the defaults are the benchmark's recipe (docs/RESULTS.md, "Self-improvement", Outcome); its vote was
    # vote_ks=[2,3,4,5,6] (shells/self_improve.sh), the default below is the run's own
    rounds: int = 9
    steps_per_round: int = 150
    problems_per_round: int = 384
    frontier_start: Optional[int] = None  # digits mastered at the start; None -> the run's data.max_len
    frontier_step: int = 12  # digits the frontier may move in a round
    advance_at: float = 0.5  # a length joins the frontier when this share of it was kept (0: always)
    inside_share: float = 0.25  # share of each round's problems at or below the frontier (past training)
    # the shorter operand has at least this share of the longer one's digits: 0 -> 1..longest (long-by-short
    # problems too), 1 -> both equally long (the diagonal cells)
    short_operand_min: float = 0.8
    pseudo_share: float = 0.5  # share of each batch from the pseudo-labels, the rest the task's own data
    vote_ks: Optional[list[int]] = None  # the current model's vote; None -> the run's eval_vote_ks
    labelers: list[str] = field(default_factory=list)  # other runs (run dirs) that vote too, at their vote_ks
    threshold: float = 0.8  # share of all votes the kept answer needs, in (0, 1]
    lr: float = 1e-3  # each round: short warm-up, constant, short cool-down
    warmup: float = 0.1  # fractions of a round
    cooldown: float = 0.2
    batch_size: Optional[int] = None  # None -> the run's train.batch_size
    label_batch: int = 256  # problems per decoding call while labeling
    seed: int = 0
    save_every_steps: int = 100  # mid-round checkpoints (resume points); round ends are always kept
    report_lens: list[int] = field(default_factory=lambda: [16, 24, 32, 40, 48, 56, 64])
    report_n: int = 20  # held-out problems per report length (true answers: for people only)
    report_seed: int = 4321
    threads: int = 0  # torch CPU threads; 0 = torch's default
    device: Device = Device.auto  # as train.device: auto, cpu or cuda (labelers and reports follow it)
    progress: bool = True


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)
    cs.store(name="makedata_schema", node=DataGenConfig)
    cs.store(name="eval_schema", node=EvalAppConfig)
    cs.store(name="self_improve_schema", node=SelfImproveConfig)
