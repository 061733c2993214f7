#!/usr/bin/env bash
# The main job, on a fresh machine, CPU only, nothing downloaded but Python packages:
#   install -> build the digits data set -> train MobileNeXt -> evaluate -> (export, predict)
# and finally print the validation top-1. Run from anywhere: bash scripts/quickstart.sh
# Environment: PYTHON (default python), QUICKSTART_EPOCHS (default: the config's),
# QUICKSTART_INT8=1 to also quantize the model to INT8 and compare it with fp32 (about +40 s),
# QUICKSTART_SKIP_INSTALL=1 to skip the pip installs (the packages are installed already).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
CONFIG=configs/quickstart/MobileNeXt_x1_0_digits.yaml
OUT=./output/MobileNeXt_x1_0
EXTRA=()
if [[ -n "${QUICKSTART_EPOCHS:-}" ]]; then EXTRA+=(-o "Global.epochs=${QUICKSTART_EPOCHS}"); fi
start=$(date +%s)

if [[ "${QUICKSTART_SKIP_INSTALL:-0}" == "1" ]]; then
    echo "== 1/4 install: skipped (QUICKSTART_SKIP_INSTALL=1)"
else
    echo "== 1/4 install"
    "$PYTHON" -m pip install -q -r requirements.txt
    "$PYTHON" -m pip install -q --no-deps -e .
    "$PYTHON" -m pip install -q scikit-learn
fi

echo "== 2/4 data: scikit-learn's handwritten digits -> dataset/digits (ImageNet layout)"
"$PYTHON" tools/prepare_quickstart_data.py --out dataset/digits

echo "== 3/4 train (CPU)"
"$PYTHON" tools/train.py -c "$CONFIG" "${EXTRA[@]}"

echo "== 4/4 evaluate the best checkpoint"
"$PYTHON" tools/eval.py -c "$CONFIG" -o Global.pretrained_model="$OUT/best_model" | tee "$OUT/eval_quickstart.log"

# ---- EXPORT AND PREDICT (deploy steps go here) -------------------------------------------
# The deploy part appends export_model.py + predict_cls.py steps here, using "$CONFIG" and
# "$OUT/best_model"; keep the summary below last.
INFER_DIR=inference/MobileNeXt_x1_0_digits
echo "== export the best checkpoint: $INFER_DIR/inference.{json,pdiparams,onnx,yml}"
"$PYTHON" tools/export_model.py -c "$CONFIG" -o Global.pretrained_model="$OUT/best_model" \
    -o Global.save_inference_dir="$INFER_DIR" > "$OUT/export_quickstart.log"
tail -n 1 "$OUT/export_quickstart.log"

echo "== predict the validation images with the exported model (ONNX Runtime on CPU: the default)"
# configs/inference_cls_from_export.yaml takes the preprocessing and labels from inference.yml
(cd deploy && "$PYTHON" python/predict_cls.py -c configs/inference_cls_from_export.yaml \
    -o Global.inference_model_dir="../$INFER_DIR" -o Global.infer_imgs=../dataset/digits/val \
    -o Global.batch_size=8 -o Global.cpu_num_threads=2) > "$OUT/predict_quickstart.log"
grep -m 1 "predicting with" "$OUT/predict_quickstart.log" || true
grep -m 3 $'\tclass id(s): ' "$OUT/predict_quickstart.log" || true
echo "== evaluate the exported model on the validation list (tools/eval_export.py)"
"$PYTHON" tools/eval_export.py --model_dir "$INFER_DIR" --list dataset/digits/val_list.txt \
    --root dataset/digits --cpu_num_threads 2 | tee "$OUT/eval_export_quickstart.log"
deploy_top1=$(sed -n 's/^\[Eval\]\[Export\] top1: \([0-9.]*\),.* images: \([0-9]*\) (\([0-9]*\) right.*/\1 (\3\/\2 images)/p' \
    "$OUT/eval_export_quickstart.log")
echo "exported model, validation top-1: ${deploy_top1}"
if [[ "${QUICKSTART_INT8:-0}" == "1" ]]; then
    echo "== INT8 post-training quantization (deploy/slim/quant_post_static.py) and INT8 vs fp32"
    "$PYTHON" deploy/slim/quant_post_static.py -c "$CONFIG" -o Global.pretrained_model="$OUT/best_model" \
        -o Global.save_inference_dir="${INFER_DIR}_int8" > "$OUT/quant_quickstart.log"
    "$PYTHON" benchmark/int8_accuracy.py --fp32 "$INFER_DIR" --int8 "${INFER_DIR}_int8" \
        --val dataset/digits/val_list.txt --root dataset/digits | grep -v "ppcls INFO"
fi
# -------------------------------------------------------------------------------------------

top1=$(sed -n 's/.*\[Eval\]\[Epoch 0\]\[Avg\].*top1: \([0-9.]*\).*/\1/p' "$OUT/eval_quickstart.log" | tail -n 1)
echo "quickstart finished in $(( $(date +%s) - start )) s"
echo "validation top-1: ${top1}"
