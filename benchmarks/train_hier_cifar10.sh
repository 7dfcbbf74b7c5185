#!/usr/bin/env bash
# The bundled cifar10-hier model on a 2-core CPU (issues 7 and 8), as it was made:
#   1. base VAE at lr 8e-4 within BASE1 minutes (its best-on-validation epoch kept aside);
#   2. the same run continued (a copy, so stage 1 stays as it was) at lr 4e-4 within BASE2 minutes,
#      then its best-on-validation epoch becomes the model;
#   3. reverse half-asleep refit with aggregate-posterior latents within REFIT minutes;
#   4. the bundle, its latent bucket scales calibrated with the refit encoder.
# Usage: benchmarks/train_hier_cifar10.sh [BASE1_MINUTES] [BASE2_MINUTES] [REFIT_MINUTES] [RUNS_DIR]
set -euo pipefail
base1=${1:-95}; base2=${2:-88}; refit_min=${3:-11}; runs=${4:-runs}
data=${BBANS_DATA:-../shared/data}
resume() { [ -f "$1/state.json" ] && echo --resume || true; }
common=(--dataset cifar10 --family hierarchical --width 64 --epochs 40 --grad-clip 3 --eval-every 4 --data-dir $data --threads 2)
b=$runs/hcifar10-base
[ -f $b/model.json ] || { bbans train "${common[@]}" --lr 8e-4 --out $b --time-limit $base1 $(resume $b)
  python benchmarks/best_checkpoint.py $b --data-dir $data; }
l=$runs/hcifar10-long
[ -d $l ] || { cp -r $b $l
  bbans train "${common[@]}" --lr 4e-4 --out $l --time-limit $base2 --resume
  python benchmarks/best_checkpoint.py $l --data-dir $data; }
r=$runs/hcifar10-refit-agg-a0.5
[ -f $r/model.json ] || bbans refit --dataset cifar10 --base $l --aggregate --alpha 0.5 --lr 1e-4 --epochs 100 \
    --eval-every 1 --out $r --data-dir $data --threads 2 --time-limit $refit_min $(resume $r)
python benchmarks/train_bundle.py cifar10-hier $l $r --data-dir $data \
    --notes "hierarchical conv VAE, width 64, CPU-trained: $base1 minutes at lr 8e-4 then $base2 at 4e-4 (best-validation epoch), refit $refit_min minutes"
# Bucket scales chosen for the encoder the bundle codes with by default (the refit).
python benchmarks/set_latent_scales.py cifar10-hier --calibrate --data-dir $data
