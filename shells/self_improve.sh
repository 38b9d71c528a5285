#!/usr/bin/env bash
# Self-improvement benchmark (docs/RESULTS.md, "Self-improvement"): 3 seeds of the main job, each teaching
# itself longer numbers with its own vote, then exact match by length on problems made with Python's random.
#   bash shells/self_improve.sh            # seeds 0 1 2; SEEDS="0" for one
# Rounds, steps and problems are the benchmark's; every key is a Hydra override of scripts/self_improve.py.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${ARITH_RUNS:-runs}
SEEDS=${SEEDS:-0 1 2}
for s in $SEEDS; do
  [ -e "$RUNS/quickstart_s$s/checkpoints/latest" ] || python pretrain.py +experiment=quickstart name=quickstart_s$s train.seed=$s
  # rounds 0-2 keep 5/5 answers; rounds 3-4 4/5 (past ~30 digits the top offsets read rows the main job never
  # trained, docs/RESULTS.md): the same command, resumed with another threshold
  for stage in "rounds=3 threshold=1.0" "rounds=5 threshold=0.8"; do
    python scripts/self_improve.py run=$RUNS/quickstart_s$s $stage steps_per_round=150 problems_per_round=384 \
      frontier_step=12 lr=3e-4 'report_lens=[16,24,32,40,48,56,64]' report_n=20 "$@"
  done
done
python scripts/bench_self_improve.py $(for s in $SEEDS; do echo $RUNS/quickstart_s${s}_si; done) \
  --lens 8,16,24,32,40,48,56,64 --n 100 --json $RUNS/self_improve_bench.json
