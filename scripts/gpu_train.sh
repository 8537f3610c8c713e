#!/usr/bin/env bash
# Fine-tune several models side by side on one lent GPU machine (the device tool), with the
# recipe of scripts/finetune.sh (NFL loss, iterative robot clicks, crop 192). The click
# simulation runs on the CPU, so a model may use several DDP ranks on the one GPU (gloo).
#
# Usage (on the GPU machine, from the repository root):
#   bash scripts/gpu_train.sh MINUTES RUNS_DIR DATA_DIR MODEL:INIT:RANKS:BATCH:WORKERS:LR ...
# DATA_DIR holds dsb2018/train, ph2/train and coco_mval (scripts/pack_training_data.py; where
# DATA_DIR is missing, DATA_DIR.tar.gz from its --archive is unpacked).
# Every minute the runs' last.safetensors and logs are copied to $OUT (when set), so a run cut
# off by the machine's time limit still returns its latest weights.
# DEVICE=cpu runs the same on a machine without a GPU (a dry run). SCHEDULE=click_by_click
# trains with a loss after every robot click (default: iterative). Where DATA_DIR also holds
# dsb2018/val and ph2/val, they are the validation folders (best.safetensors is copied too).
set -uo pipefail
minutes=${1:?minutes} runs=${2:?runs dir} data=${3:?data dir}
shift 3
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "gpu_train.sh: MINUTES must be a number, got '$minutes'" >&2; exit 2; }
for spec in "$@"; do
  IFS=: read -r model init ranks batch workers lr <<<"$spec"
  if [[ -z "$lr" || ! "$ranks" =~ ^[1-9][0-9]*$ || ! "$batch" =~ ^[1-9][0-9]*$ || ! "$workers" =~ ^[0-9]+$ \
        || ! -f "$init" ]]; then
    echo "gpu_train.sh: bad spec '$spec': expected MODEL:INIT_WEIGHTS_FILE:RANKS:BATCH:WORKERS:LR" >&2
    exit 2
  fi
done
if [[ ! -d "$data" && -f "$data.tar.gz" ]]; then  # pack_training_data.py --archive
  tar xzf "$data.tar.gz" -C "$(dirname "$data")"
fi
for d in dsb2018/train ph2/train coco_mval; do
  [[ -d "$data/$d/images" ]] || { echo "gpu_train.sh: no $data/$d/images (scripts/pack_training_data.py)" >&2; exit 2; }
done
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader || true
python3 -c "import torch, numpy, scipy, skimage, tifffile, safetensors, matplotlib; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cpus', __import__('os').cpu_count())" || exit 1
mkdir -p "$runs"

launch() {  # model init ranks batch workers lr minutes
  local args=(train --model "$1" --init "$2" --batch-size "$4" --workers "$5" --lr "$6" --minutes "$7"
    --data "$data/dsb2018/train" --data "$data/ph2/train" --data "$data/coco_mval"
    --loss nfl --click-schedule "${SCHEDULE:-iterative}" --crop-size 192 --threads 1 --device "${DEVICE:-cuda}"
    --set "object_scale=[0.05,0.8]" --set checkpoint_minutes=1.5 --out "$runs/$1")
  for v in dsb2018/val ph2/val; do [[ -d "$data/$v/images" ]] && args+=(--val "$data/$v"); done
  if [[ "$3" -gt 1 ]]; then
    torchrun --standalone --nproc_per_node "$3" -m napari_clickseg.cli "${args[@]}" >>"$runs/$1.log" 2>&1 &
  else
    python3 -m napari_clickseg.cli "${args[@]}" >>"$runs/$1.log" 2>&1 &
  fi
  pids[$1]=$!
}

declare -A pids specs
t0=$SECONDS
for spec in "$@"; do
  IFS=: read -r model init ranks batch workers lr <<<"$spec"
  specs[$model]=$spec
  launch "$model" "$init" "$ranks" "$batch" "$workers" "$lr" "$minutes"
done

copy_out() {
  [[ -n "${OUT:-}" ]] || return 0
  for m in "${!specs[@]}"; do
    [[ -f "$runs/$m/last.safetensors" ]] && cp "$runs/$m/last.safetensors" "$OUT/$m.safetensors"
    [[ -f "$runs/$m/best.safetensors" ]] && cp "$runs/$m/best.safetensors" "$OUT/$m.best.safetensors"
    [[ -f "$runs/$m.log" ]] && grep -v "^iteration [0-9]*[1-9]0 " "$runs/$m.log" >"$OUT/$m.log"
  done
}

checked=0
while :; do
  sleep 20
  alive=0
  for m in "${!specs[@]}"; do kill -0 "${pids[$m]}" 2>/dev/null && alive=1; done
  # a multi-rank run that died in its first two minutes is restarted as one process
  if (( !checked && SECONDS - t0 > 120 )); then
    checked=1
    for m in "${!specs[@]}"; do
      IFS=: read -r _ init ranks batch workers lr <<<"${specs[$m]}"
      if [[ "$ranks" -gt 1 ]] && ! kill -0 "${pids[$m]}" 2>/dev/null && [[ ! -f "$runs/$m/last.safetensors" ]]; then
        echo "== $m with $ranks ranks failed; one process instead:"; tail -5 "$runs/$m.log"
        mv "$runs/$m.log" "$runs/$m.ddp.log"; rm -rf "${runs:?}/$m"
        launch "$m" "$init" 1 "$((batch * 2))" "$((ranks * workers))" "$lr" "$(python3 -c "print(max(1.0, $minutes - 2.5))")"
        alive=1
      fi
    done
  fi
  copy_out
  (( SECONDS % 60 < 20 )) && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  (( alive )) || break
done
copy_out
for m in "${!specs[@]}"; do echo "== $m"; grep -E "^(training|finished|stopped|interrupted)|Error|error" "$runs/$m.log" | tail -4; grep "^iteration" "$runs/$m.log" | tail -2; done
