#!/usr/bin/env bash
# The bundled cifar10-hier model on a 2-core CPU (issues 7 and 8): base VAE within a wall-clock
# limit, its best-on-validation epoch, the reverse half-asleep refit with aggregate-posterior
# latents, then the bundle. Usage: benchmarks/train_hier_cifar10.sh [BASE_MINUTES] [REFIT_MINUTES] [RUNS_DIR]
set -euo pipefail
base_min=${1:-95}; refit_min=${2:-11}; runs=${3:-runs}
data=${BBANS_DATA:-../shared/data}
resume() { [ -f "$1/state.json" ] && echo --resume || true; }
b=$runs/hcifar10-base
[ -f $b/model.json ] || { bbans train --dataset cifar10 --family hierarchical --width 64 --epochs 40 --lr 8e-4 \
    --grad-clip 3 --eval-every 4 --out $b --data-dir $data --threads 2 --time-limit $base_min $(resume $b)
  python benchmarks/best_checkpoint.py $b --data-dir $data; }
r=$runs/hcifar10-refit-agg-a0.5
[ -f $r/model.json ] || bbans refit --dataset cifar10 --base $b --aggregate --alpha 0.5 --lr 1e-4 --epochs 100 \
    --eval-every 1 --out $r --data-dir $data --threads 2 --time-limit $refit_min $(resume $r)
python benchmarks/train_bundle.py cifar10-hier $b $r --data-dir $data \
    --notes "hierarchical conv VAE, width 64, CPU-trained within $base_min minutes (best-validation epoch), refit $refit_min minutes"
