#!/usr/bin/env bash
# GPU verification in one command (hf_smallllm/testing/gpu_check.py has the parts and the report format).
#
#   bash benchmarks/gpu_check.sh fetch              # here, where pip reaches PyPI: pinned wheels -> .whl/
#   bash benchmarks/gpu_check.sh [OPTIONS]          # on the GPU box: install .whl/*.whl, run, report to $OUT
#   bash benchmarks/gpu_check.sh --dry-run          # the plan, timing nothing
#
# OPTIONS go to `python -m hf_smallllm.testing.gpu_check` (--parts, --budget-s, --out, ...). The wheels are installed
# with --target into a private folder, so the machine's own packages stay as they are.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wheels="${GPU_CHECK_WHEELS:-$root/.whl}"
python="${PYTHON:-python3}"

if [ "${1:-}" = "fetch" ]; then
  cuda_major="${CUDA_MAJOR:-13}"   # bitsandbytes keeps only the libraries for this CUDA major (and its CPU one)
  mkdir -p "$wheels"
  grep -v '^\s*#' "$root/benchmarks/gpu_wheels.txt" | sed 's/#.*//' | awk 'NF {print $1}' | while read -r pin; do
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$wheels" "$pin"
  done
  for wheel in "$wheels"/bitsandbytes-*.whl; do
    [ -e "$wheel" ] || continue
    drop=$(unzip -Z1 "$wheel" | grep -E 'libbitsandbytes_(rocm|xpu|cuda)[^/]*\.so$' \
           | grep -v -E "libbitsandbytes_cuda${cuda_major}[0-9]\.so$" || true)
    [ -z "$drop" ] || zip -q -d "$wheel" $drop
  done
  echo "wheels in $wheels: $(du -sh "$wheels" | cut -f1) (the tree that travels must stay under 64 MiB with them)"
  ls -1 "$wheels"
  exit 0
fi

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
dry_run=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry_run=1; done
if [ "$dry_run" = 1 ]; then
  echo "[gpu_check] dry run: would install $(ls "$wheels"/*.whl 2>/dev/null | wc -l) carried wheels from $wheels"
elif compgen -G "$wheels/*.whl" > /dev/null; then
  site="${GPU_CHECK_SITE:-/tmp/gpu_check_site}"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl
  export PYTHONPATH="$site:$PYTHONPATH"
  echo "[gpu_check] installed $(ls "$wheels" | wc -l) carried wheels into $site"
else
  echo "[gpu_check] no wheels in $wheels: using the machine's packages"
fi
export PYTHONUNBUFFERED=1
cd "$root"
exec "$python" -m hf_smallllm.testing.gpu_check "$@"
