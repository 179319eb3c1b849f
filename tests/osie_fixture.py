"""A generated OSIE release (stimuli, eye/fixations.mat, mouse_amt/, mouse_lab/) for loader and builder tests."""

import numpy as np
from PIL import Image

from deepgaze_jax.data import osie
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.data.osie import save_mouse_mat

SIZE = (30, 40)  # (height, width) of the fixture images; OSIE's are 600x800


def write_release(root, mouse):
    """Two images, eye fixations of 2 observers, and ``mouse``: {(source, stem): (subj, [y x], order)}."""
    (root / "stimuli").mkdir(parents=True)
    (root / "eye").mkdir()
    rng = np.random.default_rng(3)
    for stem in ("1001", "1002"):
        Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(root / "stimuli" / f"{stem}.jpg")
    save_nus_mat(
        root / "eye" / "fixations.mat",
        [("1001.jpg", [([1, 40], [1, 30], [100, 200]), ([], [], [])]), ("1002.jpg", [([], [], []), ([20], [15], [300])])],
    )
    for folder in osie.MOUSE_SOURCES.values():
        (root / folder).mkdir()
    for (source, stem), (subj, yx, order) in mouse.items():
        save_mouse_mat(root / osie.MOUSE_SOURCES[source] / f"{stem}.mat", subj, yx, order)
    return root


# Worker 7 on image 1001: a slow run at x 2..4 (y 10), a fast jump, a lone sample, then a second
# viewing (order restarts) that rests at (y 20, x 30), (y 21, x 31). Worker 3: a slow pair.
MOUSE = {
    ("amt", "1001"): ([7, 7, 7, 7, 7, 7, 3, 3], [[10, 2], [10, 3], [10, 4], [25, 39], [20, 30], [21, 31], [5, 5], [5, 6]],
                      [1, 2, 3, 4, 1, 2, 1, 2]),
    ("amt", "1002"): ([3, 3], [[30, 40], [30, 40]], [1, 2]),
    ("lab", "1001"): ([1, 1], [[15, 20], [15, 21]], [1, 2]),
    ("lab", "1002"): ([2, 2, 2], [[1, 1], [2, 1], [300, 1]], [1, 2, 3]),
}
