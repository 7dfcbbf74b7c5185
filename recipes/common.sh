# Settings and helpers shared by the recipes in this folder (sourced, not run). A recipe sets NAME,
# changes to the repository root and sources this file; relative paths are taken from the root.
#
#   DATA_DIR      data sets (mnist/*-ubyte.gz, cifar-10-batches-py/)       [../shared/data]
#   OUT           run folders of this recipe                                [runs/$NAME]
#   BUNDLE        where the bundle is written: set BUNDLE=models to replace
#                 the shipped model                                        [$OUT/bundle]
#   DEVICE        cpu or cuda, for `bbans train` / `bbans refit`            [cpu]
#   EPOCHS_SCALE  multiply every epoch count (rounded up, at least 1): a
#                 smoke test of the pipeline, not the model                 [1]
#
# Every step is resumable: a finished step is skipped, a stopped one continues with --resume
# from its last finished epoch (state is saved at every epoch's end). Delete $OUT/bundle.done to
# bundle again.

DATA_DIR=${DATA_DIR:-../shared/data}
OUT=${OUT:-runs/$NAME}
BUNDLE=${BUNDLE:-$OUT/bundle}
DEVICE=${DEVICE:-cpu}
EPOCHS_SCALE=${EPOCHS_SCALE:-1}
export BBANS_DATA=$DATA_DIR

if [ "$EPOCHS_SCALE" != 1 ] && [ "$(realpath -m "$BUNDLE")" = "$(realpath -m models)" ]; then
  echo "EPOCHS_SCALE=$EPOCHS_SCALE makes a smoke-test model: not bundling it into models/" >&2
  exit 2
fi
mkdir -p "$OUT"

bbans() { python -m bbans "$@"; }

# ep N: the epoch count N, scaled by EPOCHS_SCALE (exactly N when it is 1).
ep() { awk -v n="$1" -v s="$EPOCHS_SCALE" 'BEGIN { if (s == 1) { print n; exit }
  e = n * s; c = int(e); if (c < e) c++; if (c < 1) c = 1; print c }'; }

# finished DIR N: DIR holds a finished run (model.json) of at least N epochs.
finished() {
  [ -f "$1/model.json" ] &&
    python -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["epochs"] < int(sys.argv[2]))' "$1/model.json" "$2"
}

# resume DIR: --resume when DIR holds a started run.
resume() { if [ -f "$1/state.json" ]; then echo --resume; fi; }

# train_to DIR N ARGS...: `bbans train ARGS --epochs N --out DIR`, unless DIR has finished N epochs.
train_to() {
  local dir=$1 n=$2; shift 2
  finished "$dir" "$n" || bbans train "$@" --epochs "$n" --device "$DEVICE" --data-dir "$DATA_DIR" --out "$dir" $(resume "$dir")
}

# refit_to DIR N ARGS...: `bbans refit ARGS --epochs N --out DIR`, unless DIR has finished N epochs.
refit_to() {
  local dir=$1 n=$2; shift 2
  finished "$dir" "$n" || bbans refit "$@" --epochs "$n" --device "$DEVICE" --data-dir "$DATA_DIR" --out "$dir" $(resume "$dir")
}

# test_elbo FILE SAMPLES RUNS...: the test -ELBO of RUNS (recipes/train_eval.py) into FILE, once.
test_elbo() {
  local file=$1 samples=$2; shift 2
  [ -f "$file" ] || python recipes/train_eval.py "$@" --samples "$samples" --data-dir "$DATA_DIR" --json "$file"
}

# bundle [--calibrate] RUNS...: recipes/train_bundle.py of RUNS into $BUNDLE, once; with
# --calibrate, the bucket scales are then chosen for the encoder the bundle codes with by
# default (the refit).
bundle() {
  local calibrate=
  if [ "$1" = --calibrate ]; then calibrate=1; shift; fi
  if [ ! -f "$OUT/bundle.done" ]; then
    python recipes/train_bundle.py "$NAME" "$@" --data-dir "$DATA_DIR" --out "$BUNDLE" --notes "$NOTES"
    [ -z "$calibrate" ] || python recipes/set_latent_scales.py "$NAME" --calibrate --data-dir "$DATA_DIR" --models "$BUNDLE"
    touch "$OUT/bundle.done"
  fi
  echo "$NAME: bundle in $BUNDLE"
}

