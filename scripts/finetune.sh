#!/usr/bin/env bash
# Fine-tune shipped weights on ../shared/data with RITM's normalized focal loss and iterative
# robot clicks, several models side by side, one CPU thread each, in the background (nohup).
# Usage: bash scripts/finetune.sh OUT_RUNS MODEL:MINUTES:LR:VAL_EVERY ...
#        (then scripts/ship_weights.py --copy)
set -euo pipefail
runs=${1:?output runs dir}
shift
data=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
root=$(cd "$(dirname "$0")/.." && pwd)  # the shipped weights, wherever the script is run from
for spec in "$@"; do
  IFS=: read -r model minutes lr val_every <<<"$spec"
  if [[ -z "$model" || -z "$minutes" || -z "$lr" || -z "$val_every" ]]; then
    echo "finetune.sh: bad spec '$spec': expected MODEL:MINUTES:LR:VAL_EVERY (e.g. hires:128:3e-4:100)" >&2
    exit 2
  fi
  [[ -f "$root/weights/$model.safetensors" ]] || { echo "finetune.sh: no $root/weights/$model.safetensors" >&2; exit 2; }
  mkdir -p "$runs/$model"
  nohup nice -n 5 napari-clickseg train --model "$model" \
    --data "$data/dsb2018/train" --data "$data/ph2/train" --data "$data/coco_mval" \
    --val "$data/dsb2018/val" --val "$data/ph2/val" \
    --init "$root/weights/$model.safetensors" --loss nfl --click-schedule iterative --lr "$lr" \
    --minutes "$minutes" --batch-size 8 --crop-size 192 --threads 1 --val-every "$val_every" --val-objects 48 \
    --set "object_scale=[0.05,0.8]" --out "$runs/$model" \
    >>"$runs/$model.log" 2>&1 &  # appended: an earlier log stays
  echo "started $model (pid $!) -> $runs/$model.log"
done
