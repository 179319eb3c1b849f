"""TFDS builders: generated MIT1003 / SALICON fixtures round-trip through array_record, without TensorFlow."""

import logging
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from deepgaze_jax import images
from deepgaze_jax.data import mit1003
from deepgaze_jax.data.nus_mat import save_nus_mat
from deepgaze_jax.data.salicon import save_salicon_mat
from deepgaze_jax.data.osie import find_osie_root, osie_eye, osie_mouse
from deepgaze_jax.data.tfds_builders import prepare
from osie_fixture import MOUSE, write_release


@pytest.fixture(autouse=True)
def tensorflow_stays_unimported():
    """Building and reading never import TensorFlow (installed or not; here it is not)."""
    already = "tensorflow" in sys.modules
    yield
    assert already or "tensorflow" not in sys.modules


def expected_coordinate(fix, original: int, working: int) -> np.float32:
    """MATLAB pixel ``fix`` on a side of ``original`` pixels, in working pixels as float32."""
    return np.float32((fix - 0.5) / original * working)


def random_image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture
def mit_fixture(tmp_path):
    """Three images (exactly working size, portrait JPEG, square) and 15 observers in the NUS layout."""
    rng = np.random.default_rng(1)
    root = tmp_path / "mit"
    (root / "stimuli").mkdir(parents=True)
    exact = random_image(rng, 384, 512)
    Image.fromarray(exact).save(root / "stimuli" / "a_exact.png")
    Image.fromarray(random_image(rng, 100, 60)).save(root / "stimuli" / "b_portrait.jpg")
    Image.fromarray(random_image(rng, 50, 50)).save(root / "stimuli" / "c_square.png")
    empty = ([], [], [])
    subjects = {
        "a_exact.png": [([1, 512, 100.25], [1, 384, 7], [100, 200, 300]), ([33], [44], [55])] + [empty] * 13,
        "b_portrait.jpg": [empty] * 14 + [([60, 2], [100, 3], [80, 90])],
        "c_square.png": [empty] * 15,
    }
    save_nus_mat(root / "fixations.mat", list(subjects.items()))
    return root, exact, subjects


def test_mit1003_round_trip(mit_fixture, tmp_path):
    root, exact, subjects = mit_fixture
    prepare("mit1003", tmp_path / "tfds", manual_dir=root)
    train = tfds.data_source("mit1003", data_dir=tmp_path / "tfds")["train"]
    assert len(train) == 3
    originals = {"a_exact.png": (384, 512), "b_portrait.jpg": (100, 60), "c_square.png": (50, 50)}
    working = {"a_exact.png": (384, 512), "b_portrait.jpg": (512, 384), "c_square.png": (384, 512)}
    for example, name in zip(train, subjects):  # records keep the fixations.mat order
        assert example["image_id"] == name.encode()
        np.testing.assert_array_equal(example["original_size"], originals[name])
        assert example["image"].shape == (*working[name], 3) and example["image"].dtype == np.uint8
        expected_image = images.resize(images.to_rgb_uint8(root / "stimuli" / name), working[name])
        np.testing.assert_array_equal(example["image"], expected_image)
        (H, W), (h, w) = originals[name], working[name]
        rows = [(j, fx, fy, fd) for j, s in enumerate(subjects[name]) for fx, fy, fd in zip(*s)]
        np.testing.assert_array_equal(example["x"], [expected_coordinate(fx, W, w) for _, fx, _, _ in rows])
        np.testing.assert_array_equal(example["y"], [expected_coordinate(fy, H, h) for _, _, fy, _ in rows])
        np.testing.assert_array_equal(example["subject"], [j for j, *_ in rows])
        np.testing.assert_array_equal(example["duration"], [fd for *_, fd in rows])
        assert {example[k].dtype for k in ("x", "y", "duration")} == {np.dtype(np.float32)}
        assert example["subject"].dtype == np.int32
        assert np.all(example["x"] < w) and np.all(example["y"] < h)
    np.testing.assert_array_equal(train[0]["image"], exact)  # already at working size: stored losslessly


def test_mit1003_without_data(tmp_path, monkeypatch):
    monkeypatch.setenv(mit1003.MIT1003_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"(?s)missing.*lacks stimuli.*Point manual_dir"):
        prepare("mit1003", tmp_path / "tfds")


@pytest.mark.slow
def test_real_mit1003_build(tmp_path):
    try:
        root = mit1003.find_mit1003_root()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    prepare("mit1003", tmp_path / "tfds", manual_dir=root)
    train = tfds.data_source("mit1003", data_dir=tmp_path / "tfds")["train"]
    assert len(train) == 1003
    counts = [len(example["x"]) for example in train]
    assert sum(counts) == 104_171
    shapes = {train[i]["image"].shape for i in range(0, 1003, 50)}
    assert shapes <= {(384, 512, 3), (512, 384, 3)}


SIZE = (48, 64)  # (height, width) of the fixture images; the real ones are 480x640


@pytest.fixture
def salicon_fixture(tmp_path):
    """Two train and two val images, with different fixations for the 2015 and 2017 editions."""
    rng = np.random.default_rng(2)
    root = tmp_path / "salicon"
    fixations = {}
    for split, prefix in (("train", "COCO_train2014_"), ("val", "COCO_val2014_")):
        (root / "images" / split).mkdir(parents=True)
        for k in (9, 25):
            name = f"{prefix}{k:012d}"
            Image.fromarray(random_image(rng, *SIZE)).save(root / "images" / split / f"{name}.jpg")
            for edition in ("2015", "2017"):
                observers = [
                    rng.integers(1, [SIZE[1] + 1, SIZE[0] + 1], size=(int(rng.integers(2, 6)), 2)).astype(float),
                    np.array([[SIZE[1], SIZE[0]]], float),  # one fixation, on the last pixel
                    np.zeros((0, 2)),
                ]
                fixations[edition, split, name] = observers
                gaze = [(np.vstack([o, [[0, 0]]]), np.arange(len(o) + 1) * 10.0, o) for o in observers]
                (root / "fixations" / edition / split).mkdir(parents=True, exist_ok=True)
                save_salicon_mat(root / "fixations" / edition / split / f"{name}.mat", name, SIZE, gaze)
    return root, fixations


@pytest.mark.parametrize("edition", ["2015", "2017"])
def test_salicon_round_trip(salicon_fixture, tmp_path, edition):
    root, fixations = salicon_fixture
    prepare(f"salicon/{edition}", tmp_path / "tfds", manual_dir=root)
    source = tfds.data_source(f"salicon/{edition}", data_dir=tmp_path / "tfds")
    assert set(source) == {"train", "validation"}
    for split, folder in (("train", "train"), ("validation", "val")):
        names = sorted(name for (e, s, name) in fixations if e == edition and s == folder)
        assert len(source[split]) == len(names)
        for example, name in zip(source[split], names):
            assert example["image_id"] == f"{name}.jpg".encode() and "duration" not in example
            np.testing.assert_array_equal(example["original_size"], SIZE)
            expected_image = images.resize(images.to_rgb_uint8(root / "images" / folder / f"{name}.jpg"), (24, 32))
            np.testing.assert_array_equal(example["image"], expected_image)
            observers = fixations[edition, folder, name]
            points = np.concatenate(observers)
            np.testing.assert_array_equal(example["x"], [expected_coordinate(x, SIZE[1], 32) for x in points[:, 0]])
            np.testing.assert_array_equal(example["y"], [expected_coordinate(y, SIZE[0], 24) for y in points[:, 1]])
            np.testing.assert_array_equal(example["subject"], np.repeat(np.arange(3), [len(o) for o in observers]))


def test_salicon_drops_out_of_image_fixations_with_a_warning(salicon_fixture, tmp_path, caplog):
    root, _ = salicon_fixture
    name = "COCO_val2014_000000000009"
    inside, outside = [10.0, 20.0], [SIZE[1] + 5.0, 3.0]
    gaze = [(np.array([inside, outside]), np.array([0.0, 5.0]), np.array([inside, outside]))]
    save_salicon_mat(root / "fixations" / "2017" / "val" / f"{name}.mat", name, SIZE, gaze)
    with caplog.at_level(logging.WARNING):
        prepare("salicon/2017", tmp_path / "tfds", manual_dir=root)
    assert "dropped 1 invalid fixations (0 NaN/inf, 1 out of bounds)" in caplog.text
    example = tfds.data_source("salicon/2017", data_dir=tmp_path / "tfds")["validation"][0]
    np.testing.assert_array_equal(example["x"], [expected_coordinate(10.0, SIZE[1], 32)])


def test_salicon_missing_data_says_what_to_download(salicon_fixture, tmp_path):
    root, _ = salicon_fixture
    for mat in (root / "fixations" / "2015" / "val").glob("*.mat"):
        mat.unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)no \*\.mat files in .*fixations/2015/val.*salicon\.net"):
        prepare("salicon/2015", tmp_path / "tfds", manual_dir=root)
    with pytest.raises(FileNotFoundError, match=r"(?s)needs a manual_dir.*images/train/COCO_train2014_"):
        prepare("salicon/2017", tmp_path / "tfds2")
    (root / "images" / "train" / "COCO_train2014_000000000025.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"COCO_train2014_000000000025\.jpg"):
        prepare("salicon/2017", tmp_path / "tfds3", manual_dir=root)


@pytest.mark.parametrize("config", ["eye", "mouse_amt", "mouse_lab"])
def test_osie_round_trip(tmp_path, config):
    root = write_release(tmp_path / "osie", MOUSE)
    prepare(f"osie/{config}", tmp_path / "tfds", manual_dir=root)
    train = tfds.data_source(f"osie/{config}", data_dir=tmp_path / "tfds")["train"]
    loaded = osie_eye(root) if config == "eye" else osie_mouse(root, config.removeprefix("mouse_"))
    working = loaded.fixations.rescaled([(384, 512)] * len(loaded))  # 4:3 -> the paper's 512x384
    assert len(train) == len(loaded) == 2
    for i, example in enumerate(train):
        name = loaded.stimulus_names[i]
        assert example["image_id"] == name.encode()
        np.testing.assert_array_equal(example["original_size"], loaded.image_sizes[i])
        expected_image = images.resize(images.to_rgb_uint8(root / "stimuli" / name), (384, 512))
        np.testing.assert_array_equal(example["image"], expected_image)
        on_image = working.n == i
        assert on_image.sum() > 0
        np.testing.assert_array_equal(example["x"], working.x[on_image].astype(np.float32))
        np.testing.assert_array_equal(example["y"], working.y[on_image].astype(np.float32))
        np.testing.assert_array_equal(example["subject"], working.subject[on_image])
        assert ("duration" in example) == (config == "eye")
        if config == "eye":
            np.testing.assert_array_equal(example["duration"], working.duration[on_image])


def test_osie_without_data_says_where_to_point(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPGAZE_JAX_OSIE", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"(?s)missing.*lacks stimuli.*Point manual_dir"):
        prepare("osie/eye", tmp_path / "tfds")


@pytest.mark.slow
def test_real_osie_mouse_lab_build(tmp_path):
    try:
        root = find_osie_root()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    prepare("osie/mouse_lab", tmp_path / "tfds", manual_dir=root)
    train = tfds.data_source("osie/mouse_lab", data_dir=tmp_path / "tfds")["train"]
    assert len(train) == 700
    assert sum(len(example["x"]) for example in train) == len(osie_mouse(root, "lab").fixations)
    assert {train[i]["image"].shape for i in range(0, 700, 50)} == {(384, 512, 3)}
