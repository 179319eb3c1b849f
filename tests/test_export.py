"""MIT benchmark export: histogram equalisation and the written files."""

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax.export import LEVELS, equalize, export_benchmark


def test_equalize_gives_equal_counts_and_is_monotone():
    rng = np.random.default_rng(0)
    log_density = rng.normal(size=(96, 128)).astype(np.float32)
    levels = equalize(log_density)
    assert levels.dtype == np.uint8 and levels.shape == log_density.shape
    counts = np.bincount(levels.ravel(), minlength=LEVELS)
    np.testing.assert_array_equal(counts, log_density.size // LEVELS)  # 12288 pixels: 48 per level
    order = np.argsort(log_density.ravel())
    assert np.all(np.diff(levels.ravel()[order].astype(int)) >= 0)


def test_equalize_uneven_size_and_ties():
    log_density = np.zeros((7, 11))  # all tied: levels follow pixel order
    levels = equalize(log_density).ravel().astype(int)
    counts = np.bincount(levels, minlength=LEVELS)
    assert counts.max() - counts[counts > 0].min() <= 1
    assert np.all(np.diff(levels) >= 0)
    values = np.array([[3.0, 1.0], [2.0, 1.0]])
    assert equalize(values).tolist() == [[192, 0], [128, 64]]


def test_export_benchmark_writes_images(tmp_path):
    rng = np.random.default_rng(1)
    maps = [rng.normal(size=(30, 40)), rng.normal(size=(40, 30))]
    written = export_benchmark(iter(maps), ["a.jpeg", "sub/b.jpg"], tmp_path / "out", formats=("jpg", "png"), progress=False)
    assert [p.name for p in written] == ["a.jpg", "a.png", "b.jpg", "b.png"]
    with Image.open(tmp_path / "out" / "b.png") as img:
        assert img.mode == "L" and img.size == (30, 40)
        np.testing.assert_array_equal(np.asarray(img), equalize(maps[1]))
    with Image.open(tmp_path / "out" / "a.jpg") as img:
        assert img.size == (40, 30)
        assert np.corrcoef(np.asarray(img, float).ravel(), equalize(maps[0]).ravel())[0, 1] > 0.95


def test_export_benchmark_checks_arguments(tmp_path):
    with pytest.raises(ValueError, match="formats"):
        export_benchmark([np.zeros((2, 2))], ["a"], tmp_path, formats=("bmp",))
    with pytest.raises(ValueError, match="2 names but 1"):
        export_benchmark([np.zeros((2, 2))], ["a", "b"], tmp_path, progress=False)
