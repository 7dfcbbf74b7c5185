#!/usr/bin/env bash
# The hierarchical models (issue 8): base VAE (ELBO), then the reverse half-asleep refit of every
# layer's inference network (alpha 0.5, decoder and priors frozen), then the bundle.
# Each step resumes when re-run. Usage: benchmarks/train_hier.sh DATASET BASE_MINUTES REFIT_MINUTES [RUNS_DIR]
# (binary-mnist or mnist; times are wall-clock limits: a run ends with the epochs that fit).
set -euo pipefail
ds=$1; base_min=$2; refit_min=$3; runs=${4:-runs}
export BBANS_DATA=${BBANS_DATA:-../shared/data}
resume() { [ -f "$1/state.json" ] && echo --resume || true; }
b=$runs/h$ds-base
[ -f $b/model.json ] || bbans train --dataset $ds --family hierarchical --epochs 100 --lr 1e-3 --eval-every 5 \
    --out $b --threads 1 --time-limit $base_min $(resume $b)
r=$runs/h$ds-refit-a0.5
[ -f $r/model.json ] || bbans refit --dataset $ds --base $b --alpha 0.5 --epochs 100 --lr 3e-4 --eval-every 2 \
    --out $r --threads 1 --time-limit $refit_min $(resume $r)
python benchmarks/train_bundle.py $ds-hier $b $r --notes "hierarchical conv VAE (3 latent layers), CPU-trained within a time limit"
# Bucket scales chosen for the encoder the bundle codes with by default (the refit).
python benchmarks/set_latent_scales.py $ds-hier --calibrate --data-dir $BBANS_DATA
