#!/usr/bin/env bash
# How the bundled models of this session were scheduled on a shared 2-core CPU (at most two
# training processes at once). Kept for the record; each stage is resumable on its own.
#   slot A: binary-mnist base (100 epochs) -> refit alpha 0.5 (R epochs) -> control alpha 0 (R epochs)
#   slot B: mnist base, cut at MNIST_EPOCHS -> refit / control (R epochs)
#   then  : cifar10 (benchmarks/train_cifar10.sh) in the first slot that frees up
set -uo pipefail
export BBANS_DATA=${BBANS_DATA:-../shared/data}
R=${R:-20}; MNIST_EPOCHS=${MNIST_EPOCHS:-60}; CIFAR_TRAIN_END=${CIFAR_TRAIN_END:-06:12}
slot_a() { benchmarks/train_chain.sh binary-mnist 100 $R; }
slot_b() { benchmarks/train_chain.sh mnist $MNIST_EPOCHS $R; }
# The commands actually run (PIDs replaced by descriptions):
#   nohup bbans train --dataset binary-mnist --epochs 100 --seed 0 --out runs/binary-mnist-base &
#   nohup bbans train --dataset mnist --epochs 100 --seed 0 --out runs/mnist-base &
#   after binary-mnist-base: benchmarks/train_chain.sh binary-mnist 100 20
#   when mnist-base reached epoch 60: stop it, then benchmarks/train_chain.sh mnist 60 20
#     (the chain's `bbans train --epochs 60 --resume` finalises the run at the 60 epochs done)
#   when either chain is done: benchmarks/train_cifar10.sh 32 500 <minutes until 06:12> 100 10
