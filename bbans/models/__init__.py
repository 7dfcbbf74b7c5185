"""Models: the VAE interface, the paper's models, the hierarchy, likelihoods, the registry of
bundled models and their checkpoints."""
