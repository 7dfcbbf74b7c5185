#!/usr/bin/env bash
# mnist-hier: the three-layer convolutional hierarchy on 8-bit MNIST (latents of 4 channels each,
# width 32, one residual block per stage, a mixture of three discretized logistics per pixel),
# its reverse half-asleep refit of every layer's inference network (alpha 0.5, latents from the
# prior, decoder and priors frozen), and latent bucket scales calibrated for the refit encoder.
#
# As made (2026-11-22, benchmarks/RESULTS.md "Hierarchical models: bbans bench on the full MNIST
# test sets (issue 8)"), on the shared 2-core x86_64 CPU, one torch thread, within wall-clock limits
# that are translated here to the epochs they reached (models/mnist-hier.json):
#   base   `--family hierarchical --epochs 60 --lr 1e-3 --eval-every 5 --threads 1 --time-limit 72`:
#          35 epochs in 72 min (the old benchmarks/train_hier.sh read `--epochs 100`, but the
#          metadata and RESULTS.md say 60 were planned; the count planned does not change the run)
#   refit  `--alpha 0.5 --epochs 100 --lr 3e-4 --eval-every 2 --threads 1 --time-limit 18`: 9 epochs
#          in 18 min
# then the bundle, and on 2026-11-23 its scales recalibrated with the refit encoder
# (set_latent_scales.py --calibrate: (1.2326, 2.1926) -> (1.7493, 3.1428), commit 152dd40).
# Shuffling and noise are seeded by (seed, epoch), so the epoch counts below train on the same
# batches. The training ran on 2026-11-22, done before 09:07 UTC (the bundle's first bench), with
# the code of about commits f46a899..4d8f9ac (07:40-07:49 UTC); hierarchy.py's -ELBO was rewritten
# at 881c132 (08:02, entropy term computed another way: same value, other rounding) and the model
# code restructured since, so today's code is not expected to give bit-identical weights; the
# calibration step, run with today's code on the shipped weights, gives exactly the shipped scales
# and record (checked 2026-12-02).
#
# RESULTS.md figures from this recipe: "Test -ELBO at training" 8-bit 1.1891 -> 1.1818 (the runs'
# model.json) and the figures in models/mnist-hier.json; the "MNIST 8-bit" hierarchical bench
# table was measured on this bundle with `bbans bench --model mnist-hier`.
#
# Usage: recipes/mnist-hier.sh   (variables: see recipes/common.sh)
set -euo pipefail
NAME=mnist-hier
cd "$(dirname "$0")/.."
. recipes/common.sh
NOTES=${NOTES:-"hierarchical conv VAE (3 latent layers, mixture of 3 logistics), trained on the CPU within a 72-minute limit, refit 18 minutes"}

b=$OUT/hmnist-base
r=$OUT/hmnist-refit-a0.5

train_to "$b" "$(ep 35)" --dataset mnist --family hierarchical --lr 1e-3 --batch-size 100 --seed 0 --eval-every 5 --threads 1
refit_to "$r" "$(ep 9)" --dataset mnist --base "$b" --alpha 0.5 --lr 3e-4 --batch-size 100 --seed 0 --eval-every 2 --threads 1

bundle --calibrate "$b" "$r"
