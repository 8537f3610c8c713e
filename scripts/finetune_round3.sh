#!/usr/bin/env bash
# Round 3 of the shipped weights: continue multi_stage (130 min, from its round-2 weights) and
# hires (95 min, from its round-1 weights, which had seen only 1920 samples) with RITM's
# normalized focal loss and iterative robot clicks (hires' own click-by-click schedule costs four
# backward passes per sample). Two runs side by side, one CPU thread each.
# Usage: bash scripts/finetune_round3.sh OUT_RUNS   (then scripts/ship_weights.py --copy)
set -euo pipefail
exec bash "$(dirname "$0")/finetune.sh" "${1:?output runs dir}" multi_stage:130:1.5e-4:150 hires:95:3e-4:100
