"""Scripts that reproduce the paper's experiments (thin: configuration and calls into deepgaze_jax)."""
