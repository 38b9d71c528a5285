#!/usr/bin/env bash
# Block, position and optimizer variants at the quick start budget (9 min each on a 2-core CPU): every
# variant trains the +experiment=quickstart model with one change, then evaluates the same grid as
# shells/quickstart.sh (1-24 digits, 3x the training length). Lines come in pairs (train, evaluate); run one
# pair at a time, or all (about 3 hours): bash shells/variants.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${ARITH_RUNS:-runs}
# baseline: the quick start itself (pre-LN, Abacus, AdamW)
python pretrain.py +experiment=quickstart name=qs_pre_ln
python arithmetic_eval.py run=$RUNS/qs_pre_ln eval.a_lens=[1,24] eval.n_per_cell=50
# blocks (model.block)
python pretrain.py +experiment=quickstart name=qs_post_ln model.block=post_ln
python arithmetic_eval.py run=$RUNS/qs_post_ln eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_parallel model.block=parallel
python arithmetic_eval.py run=$RUNS/qs_parallel eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_sas_p model.block=sas_p
python arithmetic_eval.py run=$RUNS/qs_sas_p eval.a_lens=[1,24] eval.n_per_cell=50
# positions: Position Coupling (one random start per example)
python pretrain.py +experiment=quickstart name=qs_coupling model.abs_pos=coupling
python arithmetic_eval.py run=$RUNS/qs_coupling eval.a_lens=[1,24] eval.n_per_cell=50
# positions: Abacus + full / partial RoPE
python pretrain.py +experiment=quickstart name=qs_abacus_rope model.rel_pos=rope
python arithmetic_eval.py run=$RUNS/qs_abacus_rope eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_abacus_rope25 model.rel_pos=rope model.rope_fraction=0.25
python arithmetic_eval.py run=$RUNS/qs_abacus_rope25 eval.a_lens=[1,24] eval.n_per_cell=50
# positions: RoPE alone, then ReRoPE (window 28 > the 27-token training inputs, so training is RoPE)
python pretrain.py +experiment=quickstart name=qs_rope model.abs_pos=none model.rel_pos=rope
python arithmetic_eval.py run=$RUNS/qs_rope eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_rerope model.abs_pos=none model.rel_pos=rerope model.rerope_window=28
python arithmetic_eval.py run=$RUNS/qs_rerope eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_rerope_leaky model.abs_pos=none model.rel_pos=rerope model.rerope_window=28 model.rerope_leaky_k=4
python arithmetic_eval.py run=$RUNS/qs_rerope_leaky eval.a_lens=[1,24] eval.n_per_cell=50
# optimizers: a third of AdamW's lr (Chen et al.: 3-10x smaller); watch emb_max_abs in metrics.jsonl
python pretrain.py +experiment=quickstart name=qs_lion +optimizer=lion train.lr=3e-4
python arithmetic_eval.py run=$RUNS/qs_lion eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_tiger +optimizer=tiger train.lr=3e-4
python arithmetic_eval.py run=$RUNS/qs_tiger eval.a_lens=[1,24] eval.n_per_cell=50
python pretrain.py +experiment=quickstart name=qs_tiger_emb01 +optimizer=tiger train.lr=3e-4 train.embedding_lr_scale=0.1
python arithmetic_eval.py run=$RUNS/qs_tiger_emb01 eval.a_lens=[1,24] eval.n_per_cell=50
# tied input/output embeddings
python pretrain.py +experiment=quickstart name=qs_tied model.tie_embeddings=true
python arithmetic_eval.py run=$RUNS/qs_tied eval.a_lens=[1,24] eval.n_per_cell=50
# one heatmap per run and a comparison plot (accuracy against operand length) in $RUNS
python scripts/plot_grid.py $RUNS/qs_pre_ln $RUNS/qs_post_ln $RUNS/qs_parallel $RUNS/qs_sas_p $RUNS/qs_coupling $RUNS/qs_abacus_rope $RUNS/qs_abacus_rope25 $RUNS/qs_rope $RUNS/qs_rerope $RUNS/qs_rerope_leaky $RUNS/qs_lion $RUNS/qs_tiger $RUNS/qs_tiger_emb01 $RUNS/qs_tied --summary
