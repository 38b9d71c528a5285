#!/usr/bin/env bash
# The main job (the README's first command): on a 2-core CPU, train a small looped Abacus model on addition up
# to 8 digits (9 min, streaming data), evaluate a grid to 24 digits (3x; 71 s, measured; 10.4 min in all),
# write the heatmap, print a summary,
# then write the run report (runs/quickstart/report/report.html) and print its path.
#
#   bash shells/quickstart.sh [TASK] [OVERRIDE ...]
#
# TASK: addition (default; preset +experiment=quickstart, run runs/quickstart), or subtraction, bitwise_or,
# sorting, multiplication (preset +experiment=quickstart_TASK, run runs/quickstart_TASK). The grid reaches 3x
# the training length: 24 digits (+ - OR, trained to 8), 15 (x, trained to 10 x 5), 15 max digits x 15 numbers
# (sorting, trained to 5 x 5). OVERRIDEs go to pretrain.py (e.g. name=x train.seed=1); a name= or runs_root=
# among them moves the run directory the evaluation reads. ARITH_RUNS: the runs root (default runs).
# ARITH_DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${ARITH_RUNS:-runs}
TASKS="addition subtraction bitwise_or sorting multiplication"
TASK=addition
if [[ $# -gt 0 && $1 != *=* ]]; then
  TASK=$1
  shift
fi
case $TASK in
  addition) PRESET=quickstart GRID=24 ;;
  subtraction | bitwise_or) PRESET=quickstart_$TASK GRID=24 ;;
  multiplication) PRESET=quickstart_$TASK GRID=15 ;;
  sorting) PRESET=quickstart_$TASK GRID=15 ;;
  *)
    echo "error: unknown task '$TASK'; valid tasks: ${TASKS// /, }" >&2
    exit 2
    ;;
esac
NAME=$PRESET
for arg in "$@"; do
  case $arg in
    name=*) NAME=${arg#name=} ;;
    runs_root=*) RUNS=${arg#runs_root=} ;;
  esac
done
RUN=$RUNS/$NAME
run() {
  if [[ ${ARITH_DRY_RUN:-0} == 1 ]]; then
    echo "$*"
  else
    "$@"
  fi
}
run python pretrain.py +experiment=$PRESET "$@"
if [[ $TASK == sorting ]]; then
  run python sort_eval.py run=$RUN eval.a_lens=[1,$GRID] eval.b_lens=[1,$GRID] eval.n_per_cell=50
else
  run python arithmetic_eval.py run=$RUN eval.a_lens=[1,$GRID] eval.n_per_cell=50
fi
run python scripts/plot_grid.py $RUN --summary
run python scripts/report.py $RUN
