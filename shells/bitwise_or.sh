#!/usr/bin/env bash
# Bitwise OR: exhaustive training set up to 20x20, evaluated up to 40x40.
set -euo pipefail
python pretrain.py +experiment=paper_bitwise_or name=or_abacus_16x1
python pretrain.py +experiment=paper_bitwise_or name=or_fire_16x1 model.abs_pos=none model.rel_pos=fire
python arithmetic_eval.py run=runs/or_abacus_16x1 eval.a_lens=[1,40]
python scripts/plot_grid.py runs/or_abacus_16x1
