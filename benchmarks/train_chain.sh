#!/usr/bin/env bash
# Base VAE, then reverse half-asleep refit (alpha 0.5) and its fair control (alpha 0, same
# epochs), one after the other, each resumable: re-running this script continues where it stopped.
# Usage: benchmarks/train_chain.sh DATASET BASE_EPOCHS REFIT_EPOCHS [RUNS_DIR]
set -euo pipefail
ds=$1; base_epochs=$2; refit_epochs=$3; runs=${4:-runs}
export BBANS_DATA=${BBANS_DATA:-../shared/data}
resume() { [ -f "$1/state.json" ] && echo --resume || true; }
done_at() { [ -f "$1/model.json" ] && python -c "import json,sys; sys.exit(0 if json.load(open('$1/model.json'))['epochs']>=$2 else 1)"; }

b=$runs/$ds-base
done_at $b $base_epochs || bbans train --dataset $ds --epochs $base_epochs --seed 0 --out $b $(resume $b)
r=$runs/$ds-refit-a0.5
done_at $r $refit_epochs || bbans refit --dataset $ds --base $b --alpha 0.5 --epochs $refit_epochs --seed 0 --out $r $(resume $r)
c=$runs/$ds-control-a0
done_at $c $refit_epochs || bbans refit --dataset $ds --base $b --alpha 0 --epochs $refit_epochs --seed 0 --out $c $(resume $c)
