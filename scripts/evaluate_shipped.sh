#!/usr/bin/env bash
# Scores the shipped weights per docs/PROTOCOL.md (robot user, 20 clicks, no BRS, no
# structural integrity, zoom-in on) on dsb2018/val, ph2/val and GrabCut, with the random-walker
# baseline on the same objects: two processes side by side, one CPU thread each (the random
# walker, slowest by far, alone in one). The model cards use the default, 50 objects per set
# (dsb2018/val sampled with seed 0; ph2/val and GrabCut have 42 and 50): the models 7.6 minutes and the
# random walker 10.4 on the 2-core dev machine (session 28).
# Usage: bash scripts/evaluate_shipped.sh OUT_DIR [MAX_OBJECTS]
set -euo pipefail
out=${1:?output dir}
n=${2:-50}
data=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
sets=(--data "$data/dsb2018/val" --data "$data/ph2/val" --data "$data/grabcut")
# float32, as the cards were scored (on a CPU with native bfloat16 "auto" would pick that)
common=(--max-clicks 20 --max-objects "$n" --seed 0 --stop-iou 0.99 --device cpu --dtype float32 -q)
export OMP_NUM_THREADS=1
napari-clickseg evaluate --model two_stream --model early --model multi_stage --model fca --model hires "${sets[@]}" "${common[@]}" --out "$out/a" &
models=$!
napari-clickseg evaluate --model random_walker "${sets[@]}" "${common[@]}" --out "$out/b" &
baseline=$!
# a bare `wait` returns 0 whatever the evaluations did: wait for each and fail if either failed
status=0
wait "$models" || status=$?
wait "$baseline" || status=$?
exit "$status"
