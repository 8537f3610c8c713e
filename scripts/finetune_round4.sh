#!/usr/bin/env bash
# Round 4 of the shipped weights: continue hires (from its round-3 weights; it gained the most
# per training minute in round 3) and two_stream (from its round-2 weights) with RITM's
# normalized focal loss and iterative robot clicks. Two runs side by side, one CPU thread each
# (two processes of one run under torchrun gave hires only 1.3x the samples per second here).
# Usage: bash scripts/finetune_round4.sh OUT_RUNS   (then scripts/ship_weights.py --copy)
set -euo pipefail
runs=${1:?output runs dir}
data=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
for spec in hires:128:3e-4:100 two_stream:118:2e-4:150; do
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
