#!/usr/bin/env bash
# Offline check of the FinBERT --gpu path on a machine with one NVIDIA GPU and no network; < 8 min on one H100.
#   bash scripts/gpu_bundle.sh                 # first, where PyPI and ../shared/data are reachable
#   bash scripts/gpu_check.sh                  # then on the GPU machine, .gpu_bundle/ carried with the checkout
#   GPU_CHECK_CPU=1 bash scripts/gpu_check.sh  # every step on the CPU at tiny sizes (no CUDA needed)
# Steps: install (the bundle's wheels into a private --target dir), env, standin (a random FinBERT-shaped
# BERT-base, or FINBERT_DIR's real weights, served as ProsusAI/finbert from a private HF cache with
# HF_HUB_OFFLINE=1; head remap checked), train (bf16 teacher and student on real data: sentences/s, peak GPU
# memory), ddp (2 ranks: weights compared), smoke (run_all.py --gpu --smoke, all five stages). One summary line
# per step, printed again together at the end; exit 1 if any step failed. Logs and reports go to $OUT/gpu_check
# when OUT is set, else stay in the scratch folder named at the end.
# Options (environment): PYTHON (default python3), GPU_CHECK_BUDGET_S (default 465), GPU_CHECK_BUNDLE, FINBERT_DIR,
# GPU_CHECK_STEPS (default "env standin train ddp smoke"; the later steps need standin).
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PY=${PYTHON:-python3}
export GPU_CHECK_DEADLINE=$((start + ${GPU_CHECK_BUDGET_S:-465}))
export GPU_CHECK_BUNDLE=$(realpath "${GPU_CHECK_BUNDLE:-.gpu_bundle}")
export GPU_CHECK_WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)
LOGS=$GPU_CHECK_WORK/logs
mkdir -p "$LOGS"
summary=()
failed=0

record() {  # record STEP SECONDS LINE: keep the summary line, show a failed step's log tail
  local line="$3 [$2 s]"
  summary+=("$line")
  echo "$line"
  if [[ "$3" != "gpu_check: $1: OK"* ]]; then
    failed=1
    echo "--- last lines of $LOGS/$1.log"
    tail -n 25 "$LOGS/$1.log" 2>/dev/null
  fi
}

if [ ! -f "$GPU_CHECK_BUNDLE/vocab.txt" ]; then
  echo "gpu_check: no bundle at $GPU_CHECK_BUNDLE; run scripts/gpu_bundle.sh where PyPI is reachable, carry .gpu_bundle/" >&2
  exit 2
fi
# The bundle's wheels: only packages this machine lacks, installed beside (never over) its own.
s=$(date +%s)
if $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$GPU_CHECK_WORK/site" \
     "$GPU_CHECK_BUNDLE"/whl/*.whl > "$LOGS/install.log" 2>&1; then
  line="gpu_check: install: OK $(ls "$GPU_CHECK_BUNDLE"/whl/*.whl | wc -l) wheels into $GPU_CHECK_WORK/site"
else
  line="gpu_check: install: FAIL pip exit $?"
fi
record install $(( $(date +%s) - s )) "$line"
# Exported, so run_all's notebook kernels (papermill starts them with this interpreter) see the same packages.
export PYTHONPATH="$GPU_CHECK_WORK/site${PYTHONPATH:+:$PYTHONPATH}"
# --target puts the wheels' data files (nbconvert's HTML templates, the python3 kernel spec) here, not in a prefix.
export JUPYTER_PATH="$GPU_CHECK_WORK/site/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
export HF_HOME=$GPU_CHECK_WORK/hf HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg

for step in ${GPU_CHECK_STEPS:-env standin train ddp smoke}; do
  s=$(date +%s)
  if [ $((GPU_CHECK_DEADLINE - s)) -le 10 ]; then
    record $step 0 "gpu_check: $step: FAIL not run: the ${GPU_CHECK_BUDGET_S:-465} s budget is spent"
    continue
  fi
  # The step enforces the deadline on its children itself; this is the backstop.
  timeout -k 5 $((GPU_CHECK_DEADLINE - s + 30)) $PY scripts/gpu_check.py $step > "$LOGS/$step.log" 2>&1
  rc=$?
  line=$(grep '^gpu_check: ' "$LOGS/$step.log" | tail -n 1)
  record $step $(( $(date +%s) - s )) "${line:-gpu_check: $step: FAIL exit $rc without a summary line}"
done

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT/gpu_check"
  cp -r "$LOGS" "$OUT/gpu_check/"
  if [ -d "$GPU_CHECK_WORK/smoke/reports" ]; then  # the stages' metrics JSON (the HTML pages are large)
    mkdir -p "$OUT/gpu_check/reports"
    cp "$GPU_CHECK_WORK"/smoke/reports/*.json "$OUT/gpu_check/reports/" 2>/dev/null
  fi
fi
echo
echo "=== gpu_check summary (logs: ${OUT:+$OUT/gpu_check, }$LOGS)"
printf '%s\n' "${summary[@]}"
echo "gpu_check: total: $([ $failed = 0 ] && echo OK || echo FAIL) in $(( $(date +%s) - start )) s"
exit $failed
