#!/usr/bin/env bash
# Block, position and optimizer variants at the quick start budget (9 min each on a 2-core CPU): every
# variant trains the +experiment=quickstart model with one change, then evaluates the diagonal (L, L) for
# L = 1..24 (3x the training length), 100 problems a cell. Lines come in pairs (train, evaluate); run one pair at
# a time, or all (about 2.5 hours on an otherwise idle machine: the budget is wall-clock, so anything else
# running at the same time costs the variant steps). The table at the end is the one in docs/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${ARITH_RUNS:-runs}
# every variant changes one thing in the pre-LN quick start (+experiment=quickstart_pre_ln); the quick start itself
# has used post-LN since this comparison (its two seeds here: qs_post_ln, qs_post_ln_s1; docs/RESULTS.md)
# baseline: pre-LN, Abacus, AdamW; and a second seed of it and of post-LN
python pretrain.py +experiment=quickstart_pre_ln name=qs_pre_ln
python arithmetic_eval.py run=$RUNS/qs_pre_ln eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_pre_ln_s1 train.seed=1 data.seed=1
python arithmetic_eval.py run=$RUNS/qs_pre_ln_s1 eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart name=qs_post_ln_s1 train.seed=1 data.seed=1
python arithmetic_eval.py run=$RUNS/qs_post_ln_s1 eval.square=[1,24] eval.n_per_cell=100
# blocks (model.block)
python pretrain.py +experiment=quickstart name=qs_post_ln
python arithmetic_eval.py run=$RUNS/qs_post_ln eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_parallel model.block=parallel
python arithmetic_eval.py run=$RUNS/qs_parallel eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_sas_p model.block=sas_p
python arithmetic_eval.py run=$RUNS/qs_sas_p eval.square=[1,24] eval.n_per_cell=100
# positions: Position Coupling (one random start per example)
python pretrain.py +experiment=quickstart_pre_ln name=qs_coupling model.abs_pos=coupling
python arithmetic_eval.py run=$RUNS/qs_coupling eval.square=[1,24] eval.n_per_cell=100
# positions: Abacus + full / partial RoPE
python pretrain.py +experiment=quickstart_pre_ln name=qs_abacus_rope model.rel_pos=rope
python arithmetic_eval.py run=$RUNS/qs_abacus_rope eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_abacus_rope25 model.rel_pos=rope model.rope_fraction=0.25
python arithmetic_eval.py run=$RUNS/qs_abacus_rope25 eval.square=[1,24] eval.n_per_cell=100
# positions: RoPE alone, then ReRoPE (training sequences have at most 28 tokens, so no distance reaches the
# window 28: training is RoPE, leaky or not; only evaluation past 8 digits meets clipped distances)
python pretrain.py +experiment=quickstart_pre_ln name=qs_rope model.abs_pos=none model.rel_pos=rope
python arithmetic_eval.py run=$RUNS/qs_rope eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_rerope model.abs_pos=none model.rel_pos=rerope model.rerope_window=28
python arithmetic_eval.py run=$RUNS/qs_rerope eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_rerope_leaky model.abs_pos=none model.rel_pos=rerope model.rerope_window=28 model.rerope_leaky_k=4
python arithmetic_eval.py run=$RUNS/qs_rerope_leaky eval.square=[1,24] eval.n_per_cell=100
# optimizers: a third of AdamW's lr (Chen et al.: 3-10x smaller); watch emb_max_abs in metrics.jsonl
python pretrain.py +experiment=quickstart_pre_ln name=qs_lion +optimizer=lion train.lr=3e-4
python arithmetic_eval.py run=$RUNS/qs_lion eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_tiger +optimizer=tiger train.lr=3e-4
python arithmetic_eval.py run=$RUNS/qs_tiger eval.square=[1,24] eval.n_per_cell=100
python pretrain.py +experiment=quickstart_pre_ln name=qs_tiger_emb01 +optimizer=tiger train.lr=3e-4 train.embedding_lr_scale=0.1
python arithmetic_eval.py run=$RUNS/qs_tiger_emb01 eval.square=[1,24] eval.n_per_cell=100
# tied input/output embeddings
python pretrain.py +experiment=quickstart_pre_ln name=qs_tied model.tie_embeddings=true
python arithmetic_eval.py run=$RUNS/qs_tied eval.square=[1,24] eval.n_per_cell=100
# accuracy at 1x/2x/3x with parameters, steps in the budget, ms/step, final loss and largest embedding entry
python scripts/repro_table.py $RUNS/qs_pre_ln $RUNS/qs_pre_ln_s1 $RUNS/qs_post_ln $RUNS/qs_post_ln_s1 $RUNS/qs_parallel $RUNS/qs_sas_p $RUNS/qs_coupling $RUNS/qs_abacus_rope $RUNS/qs_abacus_rope25 $RUNS/qs_rope $RUNS/qs_rerope $RUNS/qs_rerope_leaky $RUNS/qs_lion $RUNS/qs_tiger $RUNS/qs_tiger_emb01 $RUNS/qs_tied --cost --lengths 9-16
# one heatmap per run and a comparison plot (accuracy against operand length) in $RUNS
python scripts/plot_grid.py $RUNS/qs_pre_ln $RUNS/qs_post_ln $RUNS/qs_parallel $RUNS/qs_sas_p $RUNS/qs_coupling $RUNS/qs_abacus_rope $RUNS/qs_abacus_rope25 $RUNS/qs_rope $RUNS/qs_rerope $RUNS/qs_rerope_leaky $RUNS/qs_lion $RUNS/qs_tiger $RUNS/qs_tiger_emb01 $RUNS/qs_tied --summary
