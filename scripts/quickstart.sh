#!/usr/bin/env bash
# The main job, on a fresh machine, CPU only, nothing downloaded but Python packages:
#   install -> build the digits data set -> train MobileNeXt -> evaluate -> (export, predict)
# and finally print the validation top-1. Run from anywhere: bash scripts/quickstart.sh
# Environment: PYTHON (default python), QUICKSTART_EPOCHS (default: the config's).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
CONFIG=configs/quickstart/MobileNeXt_x1_0_digits.yaml
OUT=./output/MobileNeXt_x1_0
EXTRA=()
if [[ -n "${QUICKSTART_EPOCHS:-}" ]]; then EXTRA+=(-o "Global.epochs=${QUICKSTART_EPOCHS}"); fi
start=$(date +%s)

echo "== 1/4 install"
"$PYTHON" -m pip install -q -r requirements.txt
"$PYTHON" -m pip install -q --no-deps -e .
"$PYTHON" -m pip install -q scikit-learn

echo "== 2/4 data: scikit-learn's handwritten digits -> dataset/digits (ImageNet layout)"
"$PYTHON" tools/prepare_quickstart_data.py --out dataset/digits

echo "== 3/4 train (CPU)"
"$PYTHON" tools/train.py -c "$CONFIG" "${EXTRA[@]}"

echo "== 4/4 evaluate the best checkpoint"
"$PYTHON" tools/eval.py -c "$CONFIG" -o Global.pretrained_model="$OUT/best_model" | tee "$OUT/eval_quickstart.log"

# ---- EXPORT AND PREDICT (deploy steps go here) -------------------------------------------
# The deploy part appends export_model.py + predict_cls.py steps here, using "$CONFIG" and
# "$OUT/best_model"; keep the summary below last.
# -------------------------------------------------------------------------------------------

top1=$(sed -n 's/.*\[Eval\]\[Epoch 0\]\[Avg\].*top1: \([0-9.]*\).*/\1/p' "$OUT/eval_quickstart.log" | tail -n 1)
echo "quickstart finished in $(( $(date +%s) - start )) s"
echo "validation top-1: ${top1}"
