"""The persistent compilation cache: XLA programs compiled once, kept on disk, loaded by later runs.

Every run of a crossvalidation compiles the same programs again: about 140 of them, 44 s of the
README's Lite0 crossvalidation on a 2-core EPYC (`docs/benchmarks.md`), and 3-4 s for each new
working size in ``deepgaze-jax predict``. JAX can keep compiled programs on disk and load them
instead (``jax_compilation_cache_dir``); a program is found again only if its computation, compiler
options, devices and jax/jaxlib versions are all the same, so a cached program is the program
that would have been compiled.

That is a process-wide JAX setting, so the library never changes it on import: the programs that
own their process call `enable` first (the ``deepgaze-jax`` commands and the experiments). In
your own script or notebook:

>>> from deepgaze_jax import compilation_cache
>>> folder = compilation_cache.enable()      # doctest: +SKIP

The folder is ``$DEEPGAZE_JAX_COMPILATION_CACHE``, else ``<weights cache>/xla``
(`settings.compilation_cache_dir`); ``DEEPGAZE_JAX_COMPILATION_CACHE=0`` turns it off. A folder
set through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is left as it is. Delete the folder at any
time to reclaim the space; it is filled again as programs compile.
"""

from __future__ import annotations

import logging
from pathlib import Path

import jax

from deepgaze_jax import settings

logger = logging.getLogger(__name__)

MIN_COMPILE_S = 0.25
"""Programs that compiled faster than this are not written (reading one back costs a few ms)."""


def enable(directory: str | Path | None = None) -> Path | None:
    """Turns on the persistent compilation cache in ``directory`` (default `settings.compilation_cache_dir`).

    Returns the folder in use, or None where the setting turns it off. Call it before the first
    compilation of the process; a folder already set through ``JAX_COMPILATION_CACHE_DIR`` wins.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    folder = settings.compilation_cache_dir() if directory is None else Path(directory)
    if folder is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    logger.debug("compiled XLA programs are kept in %s", folder)
    return folder
