#!/usr/bin/env bash
# Wait until the run in DIR has finished EPOCHS epochs, stop its process PID (between epochs:
# the state is saved at each epoch's end), then run the chain with base epochs = EPOCHS, whose
# `bbans train --resume` finalises the base at the epochs done.
# Usage: benchmarks/train_cut.sh PID DIR EPOCHS DATASET REFIT_EPOCHS
set -uo pipefail
pid=$1; dir=$2; epochs=$3; ds=$4; refit=$5
ep() { python -c "import json;print(json.load(open('$dir/state.json'))['epoch'])"; }
while kill -0 $pid 2>/dev/null && [ "$(ep)" -lt $epochs ]; do sleep 5; done
kill $pid 2>/dev/null; while kill -0 $pid 2>/dev/null; do sleep 1; done
benchmarks/train_chain.sh $ds $epochs $refit
echo chain-done $(date)
