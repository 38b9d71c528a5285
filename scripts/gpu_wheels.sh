#!/usr/bin/env bash
# Wheels for arith's non-torch dependencies that the GPU image lacks, fetched here (where PyPI works) into a
# git-ignored folder that travels to the GPU machine with the device tool's `carry` (docs/GPU.md).
#
#   bash scripts/gpu_wheels.sh [--python 3.12] [--also 3.11,3.10] [--no-pyarrow] [--readme-only] [DIR]
#                                                                            # DIR: .gpu_wheels (git-ignored)
#
# What the image has (/work/.library/device/KINDS.md: Python 3.12, torch, numpy, pandas, pyarrow, matplotlib,
# safetensors, tokenizers, tqdm, pyyaml, fsspec, huggingface-hub, ...) is not fetched, except:
#   - hydra-core, omegaconf, antlr4-python3-runtime (sdist only on PyPI: built into a pure wheel here),
#     datasets, dill, multiprocess: missing there;
#   - fsspec: datasets caps it (<= a release), the image's may be newer;
#   - pyarrow (--python only, about 40 MiB): datasets wants a recent one (>= 24 for datasets 5.x) and the
#     image's version is unknown; pip installs it there only when the image's is too old. --no-pyarrow skips it.
# Versions: those installed here (the ones the CPU test suite runs with), else the pins below.
# Pure-Python wheels serve every Python; multiprocess has one tiny wheel per Python (--also adds versions).
# The folder must stay under LIMIT_MIB (the device tool carries 64 MiB with the working tree): checked.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=3.12       # the GPU image's python3 (KINDS.md: Python 3.12.3)
ALSO="3.11,3.10"  # extra Python versions for the per-version wheels (multiprocess, 150 KB each; not pyarrow)
PYARROW=1
README_ONLY=0
LIMIT_MIB=${LIMIT_MIB:-60}
DIR=.gpu_wheels
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) PY=$2; shift 2 ;;
    --also) ALSO=$2; shift 2 ;;
    --no-pyarrow) PYARROW=0; shift ;;
    --readme-only) README_ONLY=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) DIR=$1; shift ;;
  esac
done

# name==version: the version installed here, else the fallback pin
pin() {
  local name=$1 fallback=$2 v
  v=$(python3 -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null || true)
  echo "$name==${v:-$fallback}"
}
PURE=(
  "$(pin hydra-core 1.3.2)"
  "$(pin omegaconf 2.3.0)"
  "$(pin datasets 3.6.0)"
  "$(pin dill 0.3.8)"
  "$(pin fsspec 2025.3.0)"
)
PER_PY=("$(pin multiprocess 0.70.16)")
ANTLR="$(pin antlr4-python3-runtime 4.9.3)"
ARROW="$(pin pyarrow 19.0.1)"

mkdir -p "$DIR"
write_readme() {
  cat >"$DIR/README.txt" <<EOF
Wheels for arith's dependencies that the GPU image lacks, made by scripts/gpu_wheels.sh (docs/GPU.md).
This folder is git-ignored: the device tool sends it only when a call names it in carry:

    run(command="bash scripts/gpu_check.sh", carry=["$DIR"], timeout_s=540)

There, scripts/gpu_check.sh (part a_install) installs from it, offline, never touching the image's torch:

    python3 -m pip install --no-index --find-links $DIR --no-build-isolation -c <torch, numpy pinned> -e .

Keep it with the working tree under the tool's 64 MiB (bash scripts/gpu_wheels.sh checks ${LIMIT_MIB} MiB);
--no-pyarrow leaves out the one big wheel.
EOF
}
write_readme
if ((README_ONLY)); then exit 0; fi
platform_args=(--only-binary=:all: --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64)
fetch() {  # fetch PYVER PKG...
  local v=$1; shift
  python3 -m pip download -q --no-deps "${platform_args[@]}" --python-version "$v" -d "$DIR" "$@"
}

echo "python $PY${ALSO:+ (also $ALSO)} -> $DIR"
fetch "$PY" "${PURE[@]}" "${PER_PY[@]}"
IFS=, read -r -a extra <<<"$ALSO"
for v in "${extra[@]}"; do
  [[ -n $v ]] && fetch "$v" "${PER_PY[@]}"
done
if ! ls "$DIR"/antlr4_python3_runtime-*.whl >/dev/null 2>&1; then
  # 4.9.x is published as an sdist only: build the (pure-Python) wheel here
  fetch "$PY" "$ANTLR" 2>/dev/null || python3 -m pip wheel -q --no-deps -w "$DIR" "$ANTLR"
fi
if [[ $PYARROW == 1 ]]; then
  fetch "$PY" "$ARROW"
fi

ls -l "$DIR"
mib=$(du -sm "$DIR" | cut -f1)
echo "total: ${mib} MiB in $(ls "$DIR" | wc -l) files (limit ${LIMIT_MIB} MiB)"
if ((mib > LIMIT_MIB)); then
  echo "too large for the device tool's 64 MiB with the working tree: rerun with --no-pyarrow" >&2
  exit 1
fi
echo "carry it: run(command='bash scripts/gpu_check.sh', carry=['$DIR'], timeout_s=540)  (docs/GPU.md)"
