"""Files in and out: image files (reading, choosing a model, tiling), byte-exact rebuilding of
image files from pixels, and the training data sets."""
