"""Bundled model checkpoints (safetensors weights + JSON metadata)."""
