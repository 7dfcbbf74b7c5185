#!/usr/bin/env bash
# How the bundled models of this session were scheduled on a shared 2-core CPU (at most two
# training processes at once). Kept for the record; each stage is resumable on its own.
#   slot A: binary-mnist base, cut at 70 epochs -> refit alpha 0.5 (R epochs) -> control alpha 0 (R epochs)
#   slot B: mnist base, cut at MNIST_EPOCHS -> refit / control (R epochs)
#   then  : cifar10 (benchmarks/train_cifar10.sh) in the first slot that frees up
set -uo pipefail
export BBANS_DATA=${BBANS_DATA:-../shared/data}
R=${R:-15}; MNIST_EPOCHS=${MNIST_EPOCHS:-50}; CIFAR_TRAIN_END=${CIFAR_TRAIN_END:-06:12}
slot_a() { benchmarks/train_chain.sh binary-mnist 70 $R; }
slot_b() { benchmarks/train_chain.sh mnist $MNIST_EPOCHS $R; }
# The commands actually run (PIDs replaced by descriptions):
#   nohup bbans train --dataset binary-mnist --epochs 100 --seed 0 --out runs/binary-mnist-base &
#   nohup bbans train --dataset mnist --epochs 100 --seed 0 --out runs/mnist-base &
#   the CPU was shared with other engineers' jobs (load 5-7 on 2 cores), so the bases were cut:
#   benchmarks/train_cut.sh <pid of binary-mnist base> runs/binary-mnist-base 70 binary-mnist 15
#   benchmarks/train_cut.sh <pid of mnist base> runs/mnist-base 50 mnist 15
#     (stop the base after 70 / 50 epochs; the chain's `bbans train --epochs N --resume`
#      finalises it at the epochs done, then refit alpha 0.5 and control alpha 0, 15 epochs each)
#   when either chain is done: benchmarks/train_cifar10.sh 32 500 <minutes until 06:12> 100 10
# What actually happened (a scheduling slip, recorded for honesty): an earlier CIFAR-10 waiter was
# not stopped and started `benchmarks/train_cifar10.sh 32 500 83 100 10` at 04:48 (time limit
# 83 min, i.e. until ~06:11); it was paused (SIGSTOP) at 05:03 while the MNIST refits ran and
# continued (SIGCONT) when the first MNIST chain finished. A stray `bbans train --epochs 100
# --resume` of the binary-mnist base also ran for 12 epochs beside its refit and was stopped; it
# only advanced runs/binary-mnist-base/state.json, not the finalised 70-epoch model.* files the
# refit, the control and the bundle use.
