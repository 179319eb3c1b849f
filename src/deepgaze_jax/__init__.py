"""deepgaze-jax: DeepGaze II (Kümmerer, Wallis & Bethge 2016) in JAX/Flax.

    >>> import jax
    >>> import deepgaze_jax as dg
    >>> model = dg.load_model()                       # the bundled MIT1003 default (an Ensemble)
    >>> log_density = dg.predict_density(model, "photo.jpg")   # (H, W) nats, logsumexp 0
    >>> x, y = dg.sample_fixations(log_density, 10, jax.random.PRNGKey(0))
"""

from deepgaze_jax.model import (
    DeepGazeParams,
    Ensemble,
    ModelConfig,
    init_params,
    load_model,
    mixture,
    save_model,
)
from deepgaze_jax.plotting import equal_mass_levels, expected_fixations_per_region
from deepgaze_jax.predict import predict_density, sample_fixations

__all__ = [
    "DeepGazeParams",
    "Ensemble",
    "ModelConfig",
    "equal_mass_levels",
    "expected_fixations_per_region",
    "init_params",
    "load_model",
    "mixture",
    "predict_density",
    "sample_fixations",
    "save_model",
]
__version__ = "0.1.0"
