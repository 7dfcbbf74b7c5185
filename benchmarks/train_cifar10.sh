#!/usr/bin/env bash
# CIFAR-10 on the CPU: ResNet VAE at a reduced width, trained for as many epochs as fit in
# TRAIN_MIN minutes (the metadata records the epochs actually done), then a short reverse
# half-asleep refit with latents from the aggregate posterior (alpha 0.5, lr 1e-5) for REFIT_MIN
# minutes. Resumable: re-running continues the unfinished stage.
# Usage: benchmarks/train_cifar10.sh WIDTH EPOCHS TRAIN_MIN REFIT_EPOCHS REFIT_MIN [RUNS_DIR]
set -euo pipefail
width=$1; epochs=$2; train_min=$3; refit_epochs=$4; refit_min=$5; runs=${6:-runs}
export BBANS_DATA=${BBANS_DATA:-../shared/data}
resume() { [ -f "$1/state.json" ] && echo --resume || true; }
b=$runs/cifar10-base
[ -f $b/model.json ] || bbans train --dataset cifar10 --width $width --epochs $epochs --lr 5e-4 --batch-size 64 \
  --eval-every 5 --seed 0 --time-limit $train_min --out $b $(resume $b)
r=$runs/cifar10-refit-agg-a0.5
[ -f $r/model.json ] || bbans refit --dataset cifar10 --base $b --aggregate --alpha 0.5 --lr 1e-5 --batch-size 64 \
  --epochs $refit_epochs --eval-every 1 --seed 0 --time-limit $refit_min --out $r $(resume $r)
