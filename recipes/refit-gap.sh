#!/usr/bin/env bash
# The refit experiment (issue 21): over-fitted MNIST VAEs and what refitting the encoder does for
# them, measured as the codec would pay (benchmarks/refit_gap.py). Makes no bundle: its tables
# and plots are in benchmarks/RESULTS.md "When refitting the encoder pays".
#
# As run (2026-12-07, 2-core x86_64 CPU, both experiments side by side with other work, one torch
# thread each): the paper's MLP on 1,000 / 5,000 / 60,000 binarized training images at the
# default milestones, refit and control 3,000 encoder steps each, 2,000 test images; the
# hierarchy (binary-mnist-hier's architecture without pixel groups) on 1,000 images at 30, 100
# and 300 epochs, 600 encoder steps, 500 test images, K up to 20.
#
# Usage: recipes/refit-gap.sh   (OUT and DATA_DIR as in recipes/common.sh; a stopped run continues)
set -euo pipefail
NAME=refit-gap
cd "$(dirname "$0")/.."
. recipes/common.sh

python benchmarks/refit_gap.py --dataset binary-mnist --sizes 1000 5000 60000 --out "$OUT" --data-dir "$DATA_DIR"
python benchmarks/refit_gap.py --dataset binary-mnist --family hierarchical --sizes 1000 --milestones 30 100 300 \
  --refit-steps 600 --test-images 500 --ks 1 2 5 10 20 --out "$OUT" --data-dir "$DATA_DIR"
python benchmarks/refit_gap.py --report "$OUT"
