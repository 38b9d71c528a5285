#!/usr/bin/env bash
# The paper's findings checked at CPU scale (issue 5): every run trains the quick start model for the same 4000
# steps on the same data (addition up to 8 digits, streaming, seed-fixed), then evaluates (L, L) for L = 1..40
# (5x). Lines: a preset plus at most 5 overrides. On an idle 2-core CPU (2 threads, one run at a time) a 1x6 run
# takes about 6 min (FIRE 9 min), a depth-4 run 3-5 min, each evaluation seconds: about 2.5 hours in all.
# Results (mean and spread over seeds, accuracy at 1x/2x/3x/5x) go to docs/RESULTS.md (tables printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${ARITH_RUNS:-runs}
# --- position schemes (seed 0); Abacus, NoPE and FIRE also with seeds 1 and 2
python pretrain.py +experiment=cpu_repro name=r_abacus_s0
python pretrain.py +experiment=cpu_repro name=r_nope_s0 model.abs_pos=none
python pretrain.py +experiment=cpu_repro name=r_fire_s0 model.abs_pos=none model.rel_pos=fire
python pretrain.py +experiment=cpu_repro name=r_rfire_s0 model.abs_pos=none model.rel_pos=fire model.fire_max_length=128
python pretrain.py +experiment=cpu_repro name=r_rope_s0 model.abs_pos=none model.rel_pos=rope
python pretrain.py +experiment=cpu_repro name=r_learned_s0 model.abs_pos=learned
python pretrain.py +experiment=cpu_repro name=r_abacus_fire_s0 model.rel_pos=fire
python pretrain.py +experiment=cpu_repro name=r_abacus_rope_s0 model.rel_pos=rope
for s in 1 2; do
python pretrain.py +experiment=cpu_repro name=r_abacus_s$s train.seed=$s data.seed=$s
python pretrain.py +experiment=cpu_repro name=r_nope_s$s model.abs_pos=none train.seed=$s data.seed=$s
python pretrain.py +experiment=cpu_repro name=r_fire_s$s model.abs_pos=none model.rel_pos=fire train.seed=$s data.seed=$s
done
# --- architectures at effective depth 4 (Abacus), three seeds each; injection before every layer
for s in 0 1 2; do
python pretrain.py +experiment=cpu_repro_arch name=r_std_4x1_s$s model.input_injection=none train.seed=$s
python pretrain.py +experiment=cpu_repro_arch name=r_inj_4x1_s$s train.seed=$s
python pretrain.py +experiment=cpu_repro_arch name=r_loop_2x2_s$s model.layers=2 model.recurrences=2 model.alpha=1 train.seed=$s
python pretrain.py +experiment=cpu_repro_arch name=r_loop_1x4_s$s model.layers=1 model.recurrences=4 model.alpha=1 train.seed=$s
done
# --- other tasks, each with Abacus
python pretrain.py +experiment=cpu_repro name=r_mul_5 data=multiplication data.max_len=5 data.streaming=true
python pretrain.py +experiment=cpu_repro name=r_sort_4x4 data=sorting data.max_len=4 data.max_len_b=4 data.streaming=true
python pretrain.py +experiment=cpu_repro name=r_or_8 data=bitwise_or data.max_len=8 data.streaming=true
# --- evaluation: the diagonal to 5x for addition, small grids for the others
for run in "$RUNS"/r_abacus_* "$RUNS"/r_nope_* "$RUNS"/r_fire_* "$RUNS"/r_rfire_* "$RUNS"/r_rope_* "$RUNS"/r_learned_* "$RUNS"/r_std_* "$RUNS"/r_inj_* "$RUNS"/r_loop_*; do
  python arithmetic_eval.py run=$run eval.square=[1,40] eval.n_per_cell=50
done
python arithmetic_eval.py run=$RUNS/r_mul_5 eval.a_lens=[1,10] eval.n_per_cell=50
python arithmetic_eval.py run=$RUNS/r_or_8 eval.square=[1,40] eval.n_per_cell=50
python sort_eval.py run=$RUNS/r_sort_4x4 eval.a_lens=[1,8] eval.b_lens=[1,8] eval.n_per_cell=50
python scripts/plot_grid.py "$RUNS"/r_abacus_s0 "$RUNS"/r_nope_s0 "$RUNS"/r_fire_s0 "$RUNS"/r_rfire_s0 "$RUNS"/r_rope_s0 "$RUNS"/r_learned_s0 --out "$RUNS" --summary
# --- tables (mean and min-max over seeds) and the seed-band figures for docs/RESULTS.md
python scripts/repro_table.py "$RUNS"/r_abacus_s? "$RUNS"/r_nope_s? "$RUNS"/r_fire_s? "$RUNS"/r_rfire_s0 "$RUNS"/r_rope_s0 "$RUNS"/r_learned_s0 "$RUNS"/r_abacus_fire_s0 "$RUNS"/r_abacus_rope_s0 --per-run --plot "$RUNS"/repro_positions
python scripts/repro_table.py "$RUNS"/r_std_4x1_s? "$RUNS"/r_inj_4x1_s? "$RUNS"/r_loop_2x2_s? "$RUNS"/r_loop_1x4_s? --per-run --plot "$RUNS"/repro_architectures
python scripts/repro_table.py "$RUNS"/r_mul_5 "$RUNS"/r_sort_4x4 "$RUNS"/r_or_8 --per-run
