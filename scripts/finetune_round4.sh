#!/usr/bin/env bash
# Round 4 of the shipped weights: continue hires (from its round-3 weights; it gained the most
# per training minute in round 3) and two_stream (from its round-2 weights) with RITM's
# normalized focal loss and iterative robot clicks. Two runs side by side, one CPU thread each
# (two processes of one run under torchrun gave hires only 1.3x the samples per second here).
# Usage: bash scripts/finetune_round4.sh OUT_RUNS   (then scripts/ship_weights.py --copy)
set -euo pipefail
exec bash "$(dirname "$0")/finetune.sh" "${1:?output runs dir}" hires:128:3e-4:100 two_stream:118:2e-4:150
