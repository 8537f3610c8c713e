#!/usr/bin/env bash
# Stage 2 of the shipped weights for early, two_stream and multi_stage: fine-tune the stage-1
# weights (scripts/train_shipped.sh) with the click-weighted BCE instead of class-balanced BCE.
# Class-balanced BCE up-weights the foreground of small objects so much (50x for a 1% nucleus)
# that the trained models flood the image at threshold 0.5 on dsb2018; the click-weighted BCE
# (FCA-Net's click loss, weights 0.8 + 2 * max(0, 1 - d/100)) keeps probabilities calibrated.
# Usage: bash scripts/finetune_stage2.sh MINUTES STAGE1_RUNS OUT_RUNS
set -euo pipefail
minutes=${1:?minutes}
stage1=${2:?stage-1 runs dir}
runs=${3:?output runs dir}
data=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
for model in early two_stream multi_stage; do
  mkdir -p "$runs/$model"
  nohup napari-clickseg train --model "$model" \
    --data "$data/dsb2018/train" --data "$data/ph2/train" --data "$data/coco_mval" \
    --val "$data/dsb2018/val" --val "$data/ph2/val" \
    --init "$stage1/$model/last.safetensors" --loss click_bce --minutes "$minutes" \
    --batch-size 8 --crop-size 192 --threads 1 --val-every 100 --val-objects 48 \
    --set "object_scale=[0.05,0.8]" --out "$runs/$model" \
    >>"$runs/$model.log" 2>&1 &  # appended: an earlier log stays
  echo "started $model (pid $!) -> $runs/$model.log"
done
