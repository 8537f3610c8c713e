#!/usr/bin/env bash
# Round 3 of the shipped weights: continue multi_stage (130 min, from its round-2 weights) and
# hires (95 min, from its round-1 weights, which had seen only 1920 samples) with RITM's
# normalized focal loss and iterative robot clicks (hires' own click-by-click schedule costs four
# backward passes per sample). Two runs side by side, one CPU thread each.
# Usage: bash scripts/finetune_round3.sh OUT_RUNS   (then scripts/ship_weights.py --copy)
set -euo pipefail
runs=${1:?output runs dir}
data=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
for spec in multi_stage:130:1.5e-4:150 hires:95:3e-4:100; do
  IFS=: read -r model minutes lr val_every <<<"$spec"
  mkdir -p "$runs/$model"
  nohup nice -n 5 napari-clickseg train --model "$model" \
    --data "$data/dsb2018/train" --data "$data/ph2/train" --data "$data/coco_mval" \
    --val "$data/dsb2018/val" --val "$data/ph2/val" \
    --init "weights/$model.safetensors" --loss nfl --click-schedule iterative --lr "$lr" \
    --minutes "$minutes" --batch-size 8 --crop-size 192 --threads 1 --val-every "$val_every" --val-objects 48 \
    --set "object_scale=[0.05,0.8]" --out "$runs/$model" \
    >"$runs/$model.log" 2>&1 &
  echo "started $model (pid $!) -> $runs/$model.log"
done
