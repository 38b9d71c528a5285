"""The command-line surface, frozen: the config keys of every Hydra app in arith/config (pretrain.py,
arithmetic_eval.py / sort_eval.py, scripts/make_data.py, ...). A key added, renamed or removed fails here until it
is added to SURFACE on purpose (and to docs/REFERENCE.md); a new app under arith/config needs its own entry."""

from pathlib import Path

from omegaconf import OmegaConf

from arith import schema

CONFIG_DIR = Path(__file__).resolve().parents[1] / "arith" / "config"

DATA = (
    "data.task data.max_len data.max_len_b data.n_train data.test_frac data.seed data.streaming data.pad_operands "
    "data.format data.bucket data.length_power data.close_frac data.root data.name"
)
MODEL = (
    "model.width model.heads model.ffn model.layers model.recurrences model.input_injection model.inject_every "
    "model.abs_pos model.rel_pos model.max_pos model.max_k model.pos_table model.eval_k model.k_per_example "
    "model.fire_max_length model.rope_base model.rope_fraction model.rerope_window model.rerope_leaky_k "
    "model.block model.tie_embeddings model.alpha model.max_backprop model.throttle model.detach_recurrences model.eval_recurrences "
    "model.eval_vote_ks model.eval_order_votes model.eval_label_permutation model.eval_order_view_items model.attn_logit_scale model.qk_norm model.attn_log_n model.diff_bias model.diff_bias_init model.diff_bias_init_below model.row_window model.row_period model.opener_embedding model.length_feature model.length_offset model.length_code model.length_relative model.value_feature model.value_in_length model.value_vector model.number_window model.item_window model.answer_window model.prompt_window model.item_digits model.hide_prompt_digits model.aux_loss model.aux_weight model.dropout"
)
TRAIN = (
    "train.steps train.budget_minutes train.batch_size train.lr train.optimizer train.betas train.weight_decay "
    "train.clip train.embedding_lr_scale train.warmup train.cooldown train.mask_before_equals "
    "train.loss_reduction train.seed train.device train.compile train.attention train.bf16 train.cpu_bf16 train.threads train.trim_prompt "
    "train.save_every_minutes train.save_every_steps train.keep_last train.select_every train.select_lens "
    "train.select_n train.select_seed train.select_ties train.ema train.log_every train.wandb train.wandb_project "
    "train.tensorboard train.progress"
)
EVAL = (
    "eval.a_lens eval.b_lens eval.square eval.n_per_cell eval.batch_size eval.shard eval.num_shards "
    "eval.recurrences eval.k eval.vote_ks eval.vote_mode eval.order_votes eval.label_permutation eval.order_view_items eval.attn_scale eval.attn_scale_mode "
    "eval.attn_scale_where eval.row_window eval.checkpoint eval.weights eval.seed eval.cache eval.out"
)
SURFACE = {
    "pretrain": f"name runs_root run_dir {MODEL} {DATA} {TRAIN} check_lens check_n",
    "eval": f"run {EVAL} task",
    "make_data": DATA,
    "self_improve": (
        "run checkpoint out rounds steps_per_round problems_per_round frontier_start frontier_step advance_at "
        "inside_share short_operand_min pseudo_share vote_ks labelers threshold lr warmup cooldown batch_size label_batch seed "
        "save_every_steps report_lens report_n report_seed threads device progress"
    ),
}


def leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        out += leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return out


def test_every_app_has_a_frozen_surface():
    assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(SURFACE)


def test_config_keys_are_the_frozen_surface(compose):
    schema.register()
    for app, frozen in SURFACE.items():
        keys = leaves(OmegaConf.to_container(compose([], config_name=app), resolve=False))
        assert len(keys) == len(set(keys))
        assert set(keys) == set(frozen.split()), (
            f"{app}: added {sorted(set(keys) - set(frozen.split()))}, gone {sorted(set(frozen.split()) - set(keys))}"
        )
