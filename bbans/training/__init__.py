"""Training: fitting models and refitting encoders, and calibrating the latent buckets."""
