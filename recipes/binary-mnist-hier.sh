#!/usr/bin/env bash
# binary-mnist-hier: the three-layer convolutional hierarchy on binarized MNIST (latents of 4
# channels each, width 32, one residual block per stage, Bernoulli pixels) with 4 pixel groups
# (p(x | z1) over the four 2x2 sub-images in turn, each given z1 and the ones before it), its
# reverse half-asleep refit of every layer's inference network (alpha 0.5, latents from the prior,
# decoder and priors frozen), and latent bucket scales calibrated for the refit encoder.
#
# As made, in three training stages over two days (benchmarks/RESULTS.md "Hierarchical models ...
# (issue 8)", "Binarized MNIST" and "Before pixel groups"), on 2-core x86_64 / AMD EPYC CPUs,
# within wall-clock limits that are translated here to the epochs they reached (RESULTS.md and
# models/binary-mnist-hier.json):
#   stage 1  2026-11-22, done before 09:07 UTC (its bundle's first bench), `--family hierarchical
#            --epochs 100 --lr 1e-3 --eval-every 5 --threads 1 --time-limit 72`: 40 epochs in 72 min
#            (test -ELBO 0.1776)
#   stage 2  2026-11-23, the epoch-40 model with fresh Adam moments (run_from_bundle.py; the run
#            folder had not survived), `--lr 5e-4 --eval-every 5 --threads 1 --time-limit 95`:
#            epochs 41-75, ~2.5 min each (0.1742)
#   stage 3  2026-11-23 evening, the epoch-75 model with zero-initialised pixel-group heads and
#            fresh Adam moments (run_from_bundle.py --pixel-groups 4), `--pixel-groups 4 --epochs 200
#            --lr 5e-4 --eval-every 5 --threads 2 --time-limit 68`, stopped by hand after epoch 90,
#            then `--lr 2e-4 --resume --time-limit 31`: epochs 91-103; 2.0-2.5 min an epoch (0.1677)
#   refit    `--alpha 0.5 --epochs 100 --lr 3e-4 --eval-every 2 --threads 2 --time-limit 14`:
#            7 epochs (0.1676)
#   bundle   train_bundle.py, then set_latent_scales.py --calibrate: (2.2997, 2.7501, 1); bundle
#            committed 19:39 UTC (5209b83)
# The stages went through bundles; here each starts from the previous stage's run folder, which
# holds the same weights (a bundle copies a run's model files byte for byte). Not repeated here,
# since nothing shipped comes from them: the 10-epoch refits of the epoch-40 and epoch-75 models
# (test -ELBO 0.1755 and 0.1734 in RESULTS.md) and the scales of those bundles; to get one, e.g.
#   python -m bbans refit --dataset binary-mnist --base $OUT/hbinary-mnist-long --alpha 0.5 --epochs 10 \
#     --lr 3e-4 --eval-every 2 --threads 2 --out $OUT/hbinary-mnist-long-refit-a0.5
# Shuffling and noise are seeded by (seed, epoch), so the epoch counts below train on the same
# batches. Stage 1 ran with the code of about commits f46a899..4d8f9ac (07:40-07:49 UTC), before
# hierarchy.py's -ELBO was rewritten (881c132: the same value, other rounding), and the model code
# has been restructured since, so today's code is not expected to give bit-identical weights;
# the calibration step, run with today's code on the shipped weights, gives exactly the shipped
# scales and record (checked 2026-12-02).
#
# RESULTS.md figures from this recipe: the test -ELBOs per epoch of both binarized sections (the
# runs' histories: epoch 40 0.1776 ... 75 0.1742; with groups 80 0.1706 ... 103 0.1677; refit
# 0.1676), the calibrated scales and the figures in models/binary-mnist-hier.json; the bench tables
# were measured on this bundle with `bbans bench --model binary-mnist-hier`.
#
# Usage: recipes/binary-mnist-hier.sh   (variables: see recipes/common.sh)
set -euo pipefail
NAME=binary-mnist-hier
cd "$(dirname "$0")/.."
. recipes/common.sh
NOTES=${NOTES:-"hierarchical conv VAE (3 latent layers), 4 pixel groups; CPU-trained within time limits"}
common=(--dataset binary-mnist --family hierarchical --batch-size 100 --seed 0 --eval-every 5)

h1=$OUT/hbinary-mnist-base
h2=$OUT/hbinary-mnist-long
h3=$OUT/hbinary-groups
r=$OUT/hbinary-groups-refit-a0.5

# Stage 1.
train_to "$h1" "$(ep 40)" "${common[@]}" --lr 1e-3 --threads 1

# Stage 2: the stage-1 model at its epoch, fresh Adam moments, a lower rate.
[ -f "$h2/state.json" ] || python recipes/run_from_bundle.py "$h1" "$h2"
train_to "$h2" "$(ep 75)" "${common[@]}" --lr 5e-4 --threads 1

# Stage 3: pixel-group heads added (zero-initialised), fresh Adam moments; the rate lowered after
# epoch 90 (the first call finishes the run at 90, the second resumes it).
[ -f "$h3/state.json" ] || python recipes/run_from_bundle.py "$h2" "$h3" --pixel-groups 4
train_to "$h3" "$(ep 90)" "${common[@]}" --pixel-groups 4 --lr 5e-4 --threads 2
train_to "$h3" "$(ep 103)" "${common[@]}" --pixel-groups 4 --lr 2e-4 --threads 2

refit_to "$r" "$(ep 7)" --dataset binary-mnist --base "$h3" --alpha 0.5 --lr 3e-4 --batch-size 100 --seed 0 --eval-every 2 \
  --threads 2

bundle --calibrate "$h3" "$r"
