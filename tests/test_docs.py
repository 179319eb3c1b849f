"""The ``>>>`` examples in the package's docstrings and the README's Python blocks run as written.

To keep this fast, ``load_model`` returns a model on the tiny fake backbone instead of the
bundled EfficientNet-Lite0 one (loading and running that is `test_model` / `test_predict`'s job),
and ``photo.jpg`` (the examples' placeholder) is a small generated image in a temporary folder.
"""

import doctest
import importlib
import re
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import deepgaze_jax
import fake_backbone  # noqa: F401  (registers ModelConfig(backbone="fake"))

SRC = Path(deepgaze_jax.__file__).parent
README = SRC.parents[1] / "README.md"


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(SRC.rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(SRC.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd with ``photo.jpg``; ``deepgaze_jax.load_model`` giving a fake-backbone model."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    model = deepgaze_jax.init_params(deepgaze_jax.ModelConfig(backbone="fake"), jax.random.PRNGKey(0))
    monkeypatch.setattr(deepgaze_jax, "load_model", lambda *args, **kwargs: model)
    return rng


def test_the_package_has_examples():
    assert "deepgaze_jax" in modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name, sandbox):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_blocks_run(sandbox):
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    assert blocks
    for block in blocks:
        placeholders = {"img1": sandbox.integers(0, 256, (64, 80, 3), dtype=np.uint8),
                        "img2": sandbox.integers(0, 256, (120, 90, 3), dtype=np.uint8)}
        exec(compile(block, str(README), "exec"), placeholders)
