#!/usr/bin/env bash
# Addition, as in McLeish et al. 2024 (one GPU-day each). Every line: a preset plus at most 5 overrides.
# Run one line at a time, or all: bash shells/addition.sh
set -euo pipefail
python pretrain.py +experiment=paper_addition name=add_abacus_16x1 model.layers=16 model.recurrences=1
python pretrain.py +experiment=paper_addition name=add_abacus_8x2_inj model.layers=8 model.recurrences=2 model.input_injection=add
python pretrain.py +experiment=paper_addition name=add_abacus_1x16_inj model.layers=1 model.recurrences=16 model.input_injection=add
python pretrain.py +experiment=paper_addition name=add_fire_16x1 model.abs_pos=none model.rel_pos=fire
python pretrain.py +experiment=paper_addition name=add_abacus_fire_16x1 model.rel_pos=fire
python pretrain.py +experiment=paper_addition name=add_nope_16x1 model.abs_pos=none
# the 100x100 grid in 20 cost-balanced shards, one after another (LAUNCHER=hydra/launcher=slurm_eval: 20 SLURM
# jobs at once, logs in runs/add_abacus_16x1/sweeps/), then the square sizes beyond, then one heatmap
python arithmetic_eval.py -m run=runs/add_abacus_16x1 eval.a_lens=[1,100] eval.num_shards=20 'eval.shard=range(0,20)' ${LAUNCHER:-}
python arithmetic_eval.py run=runs/add_abacus_16x1 eval.square=[101,160]
python scripts/plot_grid.py runs/add_abacus_16x1
