#!/usr/bin/env bash
# Sorting up to 10 numbers of up to 10 digits; evaluated on a 30x30 grid of max digits x array length.
set -euo pipefail
python pretrain.py +experiment=paper_sorting name=sort_abacus_8x2_inj
python pretrain.py +experiment=paper_sorting name=sort_abacus_16x1 model.layers=16 model.recurrences=1 model.input_injection=none
python sort_eval.py run=runs/sort_abacus_8x2_inj eval.a_lens=[1,30]
python scripts/plot_grid.py runs/sort_abacus_8x2_inj
