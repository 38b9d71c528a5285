#!/usr/bin/env bash
# Multiplication up to 15x15 digits (McLeish et al. 2024 trained on 8 GPUs: prefix with torchrun).
set -euo pipefail
torchrun --standalone --nproc_per_node=8 pretrain.py +experiment=paper_multiplication name=mul_abacus_1x16_inj
torchrun --standalone --nproc_per_node=8 pretrain.py +experiment=paper_multiplication name=mul_abacus_fire_1x16_inj model.rel_pos=fire
python arithmetic_eval.py run=runs/mul_abacus_1x16_inj eval.a_lens=[1,25]
python scripts/plot_grid.py runs/mul_abacus_1x16_inj
