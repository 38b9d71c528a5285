#!/usr/bin/env bash
# The GPU check: every open GPU measurement of arith in one command, for a short GPU lease (docs/GPU.md).
#
#   bash scripts/gpu_check.sh [--dry-run] [OUT]
#
# OUT: the folder for the logs and numbers (default $OUT, else gpu_check_out/): gpu_check.log, results.jsonl,
# summary.md, summary.json, diagonal.csv. The parts (env, a_install, b_cuda_tests, c_bench_train, d_dist,
# e_paper_run, f_grid) run one after the other, each timed under its own timeout; a failing part does not
# stop the rest; a global deadline (GPU_CHECK_BUDGET seconds: 480, dry run 200) skips the parts it leaves no
# time for. --dry-run: the same on CPU with tiny sizes (a few steps, gloo for NCCL, an 8x8 grid), about a
# minute; tests/test_gpu_check.py runs it.
#
# Environment: PYTHON (python3), GPU_CHECK_BUDGET, GPU_CHECK_SKIP (space-separated parts to skip), GPU_CHECK_PAPER (extra Hydra overrides for e_paper_run),
# GPU_CHECK_WORK (scratch folder for runs; default a fresh temporary one, removed at the end unless
# GPU_CHECK_KEEP=1).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
HELPER=("$PY" "$ROOT/scripts/gpu_check.py")
PARTS=(env a_install b_cuda_tests c_bench_train d_dist e_paper_run f_grid)

# ------------------------------------------------------------------------------------------------ the parts
# Each runs in its own process (bash gpu_check.sh --part NAME, under timeout), reading GC_* from the
# environment; it returns non-zero on failure, and writes $GC_WORK/status_NAME to report a skip.
remaining() {  # remaining [MARGIN]: seconds left of this part's limit less MARGIN, at least 1
  local left=$((GC_LIMIT - ($(date +%s) - GC_PART_START) - ${1:-0}))
  echo $((left < 1 ? 1 : left))
}

# an inner time limit: --foreground keeps the command in the part's process group, so that the part's own
# timeout reaches it (and its children) too
within() {
  timeout --foreground -k 10 "$@"
}

skip() {  # skip REASON: the part is reported as skipped (rc 0)
  echo "$1" | tee "$GC_WORK/status_$GC_NAME"
}

first_error() {  # the first non-zero argument, else 0
  local rc
  for rc in "$@"; do
    if ((rc != 0)); then
      echo "$rc"
      return
    fi
  done
  echo 0
}

dry_flag() {
  if ((GC_DRY)); then echo --dry-run; fi
}

# the paper-style run (e) and its stand-in for f: the paper's addition preset, looped 1x16 with input injection
paper_overrides() {
  local name=$1
  if ((GC_DRY)); then
    echo +experiment=paper_addition "name=$name" model.width=64 model.heads=2 model.ffn=128 model.layers=1 \
      model.recurrences=2 model.input_injection=add data.max_len=5 data.streaming=true train.batch_size=32 \
      train.lr=1e-3 train.compile=false train.cpu_bf16=true train.threads=1 train.progress=false \
      train.log_every=10 train.save_every_minutes=100 check_lens=0
  else
    echo +experiment=paper_addition "name=$name" model.layers=1 model.recurrences=16 model.input_injection=add \
      data.streaming=true train.compile=true train.bf16=true train.progress=false train.log_every=100 \
      train.save_every_minutes=100 check_lens=0 "${GPU_CHECK_PAPER:-}"
  fi
}

part_env() {
  "${HELPER[@]}" env --results "$GC_RES" $(dry_flag)
}

part_a_install() {
  "${HELPER[@]}" install --results "$GC_RES" --work "$GC_WORK" --wheels "$ROOT/.gpu_wheels" \
    --timeout "$(remaining 10)" $(dry_flag)
}

part_b_cuda_tests() {
  if ((GC_DRY)) || ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    skip "skipped: no CUDA"
    return 0
  fi
  local xdist=()
  if "$PY" -c "import xdist" 2>/dev/null; then xdist=(-n 8); fi
  "$PY" -m pytest -q -p no:cacheprovider "${xdist[@]}" -k "cuda or fast_paths" tests 2>&1 | tee "$GC_WORK/b.log"
  local rc=${PIPESTATUS[0]}
  "${HELPER[@]}" pytest --results "$GC_RES" --log "$GC_WORK/b.log"
  return "$rc"
}

part_c_bench_train() {
  local json="$GC_WORK/bench.jsonl" args rc1 rc2=0 rc3
  rm -f "$json"
  if ((GC_DRY)); then
    args=(--device cpu --steps 2 --warmup 1 --batch 8 --threads 1 --no-compile --override model.width=64
      --override model.heads=2 --override model.ffn=128 --override model.layers=2 --override data.max_len=5)
  else
    args=(--device cuda --steps 10 --sync-debug)
  fi
  args+=(--json "$json")
  # sdpa first (NoPE and FIRE for the ratio, then Abacus); two thirds of the time, the rest for flex
  within $((GC_LIMIT * 2 / 3)) "$PY" scripts/bench_train.py --configs nope_16x1,fire_16x1,paper_16x1 \
    --attention sdpa "${args[@]}"
  rc1=$?
  if ((GC_DRY)); then
    echo "flex: skipped on CPU (FlexAttention has no CPU backward)"
  else
    within "$(remaining 8)" "$PY" scripts/bench_train.py --configs fire_16x1 --attention flex \
      "${args[@]}"
    rc2=$?
  fi
  "${HELPER[@]}" bench --results "$GC_RES" --bench-json "$json"
  rc3=$?
  return "$(first_error "$rc1" "$rc2" "$rc3")"
}

part_d_dist() {
  local steps=20
  if ((GC_DRY)); then steps=6; fi
  # one process through torchrun (its environment, a c10d rendezvous), NCCL on the GPU (gloo in the dry run)
  within "$(remaining 3)" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
    scripts/gpu_check.py dist --results "$GC_RES" --work "$GC_WORK" --steps "$steps" $(dry_flag)
}

part_e_paper_run() {
  local run="$GC_WORK/runs/gpu_check_paper" train=() grid=() t_train rc1 rc2 rc3
  read -r -a train <<<"$(paper_overrides gpu_check_paper)"
  if ((GC_DRY)); then
    train+=(train.steps=30 train.budget_minutes=null)
    grid=("eval.square=[1,6]" eval.n_per_cell=10)
    t_train=$((GC_LIMIT * 2 / 3))
  else
    train+=(train.budget_minutes=2.5)
    # k = 50: the preset trains offsets 0..100 per batch, so k = 0 reads rows it rarely trained (0% from 2x2 on
    # the H200, 38-70% at k = 20 / 50 on the same checkpoint; docs/BENCHMARKS.md)
    grid=("eval.square=[1,100]" eval.n_per_cell=100 eval.k=50)
    t_train=$((GC_LIMIT - 32)) # 178 s: start-up and 2.5 min of training; the diagonal gets the rest
    if ((t_train < 10)); then t_train=10; fi
  fi
  # the budget ends training after 2.5 minutes; the timeout stops it (SIGTERM: saves, then exits) if not
  TORCH_LOGS=recompiles within "$t_train" "$PY" pretrain.py "${train[@]}" 2>&1 | tee "$GC_WORK/e.log"
  rc1=${PIPESTATUS[0]}
  within "$(remaining 8)" "$PY" arithmetic_eval.py "run=$run" "${grid[@]}" eval.cache=true 2>&1 |
    tee -a "$GC_WORK/e.log"
  rc2=${PIPESTATUS[0]}
  "${HELPER[@]}" paper --results "$GC_RES" --run "$run" --log "$GC_WORK/e.log" --copy-csv "$GC_OUT/diagonal.csv"
  rc3=$?
  return "$(first_error "$rc1" "$rc2" "$rc3")"
}

part_f_grid() {
  local run="$GC_WORK/runs/gpu_check_paper" extra=() sizes
  if ! ls "$run"/checkpoints/*/model.safetensors >/dev/null 2>&1; then
    echo "no checkpoint from e_paper_run: timing a stand-in of the same shape, trained 2 steps"
    run="$GC_WORK/runs/gpu_check_standin"
    extra=(--untrained)
    local standin=()
    read -r -a standin <<<"$(paper_overrides gpu_check_standin)"
    "$PY" pretrain.py "${standin[@]}" train.compile=false train.steps=2 train.budget_minutes=null || return 1
  fi
  if ((GC_DRY)); then
    sizes=(--max-len 8 --n 10 --max-cells 6 --sample-seconds 10 --compare-cells 4 --compare-n 25 --threads 1)
  else
    local sample=$(($(remaining) / 2 - 8)) # the other half for the bf16 / float32 comparison
    if ((sample < 3)); then sample=3; fi
    sizes=(--max-len 100 --n 100 --batch 2048 --max-cells 60 --sample-seconds "$sample" --compare-cells 10
      --compare-n 100)
  fi
  "${HELPER[@]}" grid --results "$GC_RES" --run "$run" "${sizes[@]}" "${extra[@]}"
}

if [[ ${1:-} == --part ]]; then  # internal: one part, called below under timeout
  GC_NAME=$2
  "part_$GC_NAME"
  exit $?
fi

# ------------------------------------------------------------------------------------------------ main
DRY=0
OUT_DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    -h | --help)
      sed -n '2,16p' "$SELF"
      exit 0
      ;;
    -*)
      echo "unknown option $1" >&2
      exit 2
      ;;
    *) OUT_DIR=$1 ;;
  esac
  shift
done
OUT_DIR=${OUT_DIR:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || exit 2
if [[ -n ${GPU_CHECK_WORK:-} ]]; then
  WORK=$GPU_CHECK_WORK
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
fi
LOG="$OUT_DIR/gpu_check.log"
RES="$OUT_DIR/results.jsonl"
: >"$LOG"
: >"$RES"
rm -f "$OUT_DIR/summary.md" "$OUT_DIR/summary.json" "$OUT_DIR/diagonal.csv"

export GC_DRY=$DRY GC_OUT=$OUT_DIR GC_WORK=$WORK GC_RES=$RES
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 TQDM_DISABLE=1 WANDB_MODE=offline
export ARITH_RUNS="$WORK/runs" ARITH_DATA="$WORK/data"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" # arith importable from any folder, installed or not
declare -A LIMIT
if ((DRY)); then
  export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  LIMIT=([env]=30 [a_install]=45 [b_cuda_tests]=10 [c_bench_train]=60 [d_dist]=60 [e_paper_run]=80
    [f_grid]=45)
  BUDGET=${GPU_CHECK_BUDGET:-200}
else
  LIMIT=([env]=20 [a_install]=45 [b_cuda_tests]=90 [c_bench_train]=120 [d_dist]=30 [e_paper_run]=210
    [f_grid]=150)
  BUDGET=${GPU_CHECK_BUDGET:-480}
fi
START=$(date +%s)
DEADLINE=$((START + BUDGET - 8)) # 8 s kept for the summary

say() { echo "$*" | tee -a "$LOG"; }

say "GPU check$( ((DRY)) && echo ' (dry run, CPU)') at $(date -u '+%Y-%m-%d %H:%M:%S UTC'): out $OUT_DIR," \
  "work $WORK, budget ${BUDGET}s"
for name in "${PARTS[@]}"; do
  limit=${LIMIT[$name]}
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then # a short lease: parts already measured elsewhere
    say "=== part $name: skipped (GPU_CHECK_SKIP)"
    "${HELPER[@]}" record --results "$RES" --part "$name" --rc 0 --seconds 0 --limit "$limit" \
      --status "skipped: GPU_CHECK_SKIP"
    continue
  fi
  left=$((DEADLINE - $(date +%s)))
  if ((left < 10)); then
    say "=== part $name: skipped, out of time"
    "${HELPER[@]}" record --results "$RES" --part "$name" --rc 0 --seconds 0 --limit "$limit" \
      --status "skipped: out of time (global budget ${BUDGET}s)"
    continue
  fi
  if ((limit > left)); then limit=$left; fi
  say "=== part $name (limit ${limit}s) ==="
  t0=$(date +%s.%N)
  GC_LIMIT=$limit GC_PART_START=${t0%.*} timeout -k 15 "$limit" bash "$SELF" --part "$name" \
    >"$WORK/part_$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  cat "$WORK/part_$name.log" >>"$LOG"
  if [[ $name == env ]]; then cat "$WORK/part_$name.log"; fi # the torch version and the open suspects
  if ((rc == 124 || rc == 137)); then
    status="timeout (${limit}s)"
  elif ((rc != 0)); then
    status=failed
  elif [[ -s $WORK/status_$name ]]; then
    status=$(head -n 1 "$WORK/status_$name")
  else
    status=ok
  fi
  "${HELPER[@]}" record --results "$RES" --part "$name" --rc "$rc" --seconds "$seconds" --limit "$limit" \
    --status "$status"
  say "--- $name: $status (rc $rc, ${seconds}s)"
  if [[ $status != ok && $status != skipped* ]]; then # the end of what went wrong, in the tool's output_tail
    tail -n 8 "$WORK/part_$name.log" | cut -c1-300 | sed 's/^/    /'
  fi
done

"${HELPER[@]}" summary --results "$RES" --out "$OUT_DIR" $( ((DRY)) && echo --dry-run) >>"$LOG" 2>&1
rc=$?
echo
cat "$OUT_DIR/summary.md" 2>/dev/null
say "GPU check done in $(($(date +%s) - START))s; summary in $OUT_DIR/summary.md"
if [[ -z ${GPU_CHECK_WORK:-} && ${GPU_CHECK_KEEP:-0} != 1 ]]; then
  rm -rf "$WORK"
fi
exit "$rc"
