#!/usr/bin/env bash
# Trains the five shipped generalist models, all at once, one CPU thread each.
# Usage: bash scripts/train_shipped.sh MINUTES [RUNS_DIR]   (resume: RESUME=1 bash ...)
# The data folders are ../shared/data (see its README). Each run writes
# RUNS_DIR/<model>/{config.json,log.csv,curves.png,best.safetensors,last.safetensors}.
set -euo pipefail
minutes=${1:?minutes per model}
runs=${2:-runs}
data=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
resume=()
[ "${RESUME:-0}" = 1 ] && resume=(--resume)
for model in two_stream hires multi_stage fca early; do
  extra=()
  [ "$model" = hires ] && extra=(--set click_steps=3)
  # objects from 5% of the crop (first click on a whole image) to 80% (zoomed in)
  mkdir -p "$runs/$model"
  nohup napari-clickseg train --model "$model" \
    --data "$data/dsb2018/train" --data "$data/ph2/train" --data "$data/coco_mval" \
    --val "$data/dsb2018/val" --val "$data/ph2/val" \
    --init imagenet --minutes "$minutes" --batch-size 8 --crop-size 192 --threads 1 \
    --val-every 150 --val-objects 48 --set "object_scale=[0.05,0.8]" --out "$runs/$model" "${resume[@]}" "${extra[@]}" \
    >>"$runs/$model.log" 2>&1 &  # appended: an earlier log stays
  echo "started $model (pid $!) -> $runs/$model.log"
done
