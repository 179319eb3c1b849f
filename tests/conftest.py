"""Fixtures shared by several test modules, and XLA's compilation cache for the whole session."""

import atexit
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest
import scipy.io
from PIL import Image

from deepgaze_jax import crossvalidation as cv
from deepgaze_jax.training import TrainConfig
from synthetic import CONFIG, CV_SEED, NUS_SIZES, make_data

FINISHED_TRAIN = TrainConfig(max_epochs=3)


def use_compilation_cache() -> str:
    """Points JAX's persistent compilation cache at a fresh directory (removed at exit), or at
    ``$JAX_COMPILATION_CACHE_DIR`` when set (to keep a warm cache between runs), and returns it.

    Every `training.make_steps` jits fresh closures, so the folds, reruns and CLI runs of the suite
    compile the same L-BFGS programs again and again (tens of seconds each on 2 cores); the cache,
    keyed by the compiled program, compiles each once. Subprocesses inherit it through the environment.
    """
    directory = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if not directory:
        directory = tempfile.mkdtemp(prefix="deepgaze-jax-test-xla-cache-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    return directory


use_compilation_cache()
# Train in float32 wherever the suite runs ("auto" picks bfloat16 on a GPU): the equalities the tests check
# (at once = fold by fold, a model's stopping NLL = its history's) are float32 ones. Subprocesses inherit it;
# the bfloat16 path is tested by asking for it (tests/test_batched_training.py).
os.environ.setdefault("DEEPGAZE_JAX_TRAINING_DTYPE", "float32")


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """(data, workdir, mixture) of a finished 3-fold crossvalidation on 12 synthetic images."""
    grids, _, fixations = make_data(num_images=12)
    workdir = tmp_path_factory.mktemp("cv")
    data = cv.FoldData(grids, fixations)
    combined = cv.run_crossvalidation(data, CONFIG, FINISHED_TRAIN, workdir, num_folds=3, seed=CV_SEED,
                                       log=lambda _: None)
    return data, workdir, combined


@pytest.fixture(scope="session")
def nus_dataset(tmp_path_factory):
    """4 images, 3 observers looking near one image-specific spot; observer 2 makes one fixation
    on image 0 (MATLAB scalars) and none on image 1 (empty arrays)."""
    root = tmp_path_factory.mktemp("nus")
    (root / "stimuli").mkdir()
    rng = np.random.default_rng(0)
    entries = np.zeros(len(NUS_SIZES), dtype=[("img", object), ("subjects", object)])
    for i, (h, w) in enumerate(NUS_SIZES):
        name = f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "stimuli" / name)
        spot = rng.uniform([10, 10], [w - 10, h - 10])
        subjects = np.empty((3, 1), dtype=object)
        for s in range(3):
            count = {(0, 2): 1, (1, 2): 0}.get((i, s), 6)
            xy = np.clip(spot + rng.normal(0, 3, (count, 2)), 1, [w, h])  # MATLAB pixels 1..W
            subjects[s, 0] = {"fix_x": xy[:, 0], "fix_y": xy[:, 1], "fix_duration": np.full(count, 250.0)}
        entries[i] = (name, subjects)
    scipy.io.savemat(root / "fixations.mat", {"fixations": entries})
    return root
