"""TFDS builders for MIT1003, SALICON and OSIE, written as array_record and read without TensorFlow.

Build with `prepare` (or ``builder.download_and_prepare(file_format="array_record", ...)``) and
read with ``tfds.data_source(name, data_dir=...)``, which returns random-access sequences of
numpy examples. Neither step imports TensorFlow: `tfds.features.Image` encodes numpy arrays
with TF, but PIL images with PIL, so examples hand it PIL images (stored losslessly as PNG),
and `tfds.data_source` decodes them with PIL (or OpenCV when installed).

Every example is one image at the model's working size, with all its fixations:

- ``image``: (h, w, 3) uint8; ``image_id``: original file name (bytes when read);
- ``original_size``: (2,) int32 (height, width) of the original image;
- ``x``, ``y``: (k,) float32 working-space pixel coordinates (0-based continuous, see
  `fixations`), strictly inside the image; ``subject``: (k,) int32 observer index;
- ``duration``: (k,) float32 fixation durations in ms (MIT1003 and OSIE eye only).

Shuffling is disabled: record ``i`` of a split is image ``i`` in the source's order.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from deepgaze_jax.data import datasets, mit1003, osie, salicon
from deepgaze_jax.data.datasets import Dataset

log = logging.getLogger(__name__)

_MIT1003_CITATION = """@inproceedings{judd2009learning,
  title={Learning to predict where humans look},
  author={Judd, Tilke and Ehinger, Krista and Durand, Fr{\\'e}do and Torralba, Antonio},
  booktitle={ICCV}, year={2009}}"""
_SALICON_CITATION = """@inproceedings{jiang2015salicon,
  title={SALICON: Saliency in Context},
  author={Jiang, Ming and Huang, Shengsheng and Duan, Juanyong and Zhao, Qi},
  booktitle={CVPR}, year={2015}}"""
_OSIE_CITATION = """@article{xu2014predicting,
  title={Predicting human gaze beyond pixels},
  author={Xu, Juan and Jiang, Ming and Wang, Shuo and Kankanhalli, Mohan S and Zhao, Qi},
  journal={Journal of Vision}, volume={14}, number={1}, pages={28}, year={2014}}"""


def _float32_inside(v: np.ndarray, limit: int) -> np.ndarray:
    """``v`` as float32, kept below ``limit`` (rounding to float32 can land exactly on it)."""
    return np.minimum(v.astype(np.float32), np.nextafter(np.float32(limit), np.float32(0)))


def _manual_dir(dl_manager: tfds.download.DownloadManager) -> Path | None:
    """The manual dir if it exists and is not empty, else None."""
    try:
        return Path(dl_manager.manual_dir)
    except AssertionError:  # tfds raises AssertionError for a missing or empty manual dir
        return None


def _located_root(find_root, dl_manager, instructions: str) -> Path:
    """``find_root(manual_dir)``; when the data is missing, the error ends with the download instructions."""
    try:
        return find_root(_manual_dir(dl_manager))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}\n{instructions}") from exc


class _FixationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and info of the builders below; not registered itself."""

    VERSION = tfds.core.Version("1.0.0")
    WITH_DURATION: bool

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds' default probes the `importlib_resources` backport (absent on Python >= 3.9)
        # for builders defined inside a package; the class's own file is what it looks for.
        return epath.Path(inspect.getfile(cls))

    def _fixation_info(self, description: str, homepage: str, citation: str) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "image_id": tfds.features.Text(),
            "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
            "x": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "y": tfds.features.Tensor(shape=(None,), dtype=np.float32),
            "subject": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        }
        if self.WITH_DURATION:
            features["duration"] = tfds.features.Tensor(shape=(None,), dtype=np.float32)
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(features),
            homepage=homepage,
            citation=citation,
            disable_shuffling=True,
        )

    def _examples(self, dataset: Dataset, sizes: np.ndarray) -> Iterator[tuple[str, dict]]:
        """(key, example) per image of ``dataset`` resized to ``sizes`` ((I, 2) height, width)."""
        fixations = dataset.fixations.rescaled(sizes)
        order = np.argsort(fixations.n, kind="stable")
        bounds = np.searchsorted(fixations.n[order], np.arange(len(dataset) + 1))
        for i, name in enumerate(dataset.stimulus_names):
            h, w = (int(s) for s in sizes[i])
            idx = order[bounds[i] : bounds[i + 1]]
            example = {
                "image": Image.fromarray(dataset.load_image(i, (h, w))),
                "image_id": name,
                "original_size": dataset.image_sizes[i].astype(np.int32),
                "x": _float32_inside(fixations.x[idx], w),
                "y": _float32_inside(fixations.y[idx], h),
                "subject": fixations.subject[idx],
            }
            if self.WITH_DURATION:
                example["duration"] = fixations.duration[idx]
            yield name, example


class Mit1003(_FixationBuilder):
    """MIT1003 at the DeepGaze II paper's working size (512x384 or 384x512), one split "train"."""

    WITH_DURATION = True
    RELEASE_NOTES = {"1.0.0": "Paper working space, NUS fixations.mat (1003 images, 104,171 fixations)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Point manual_dir (or ${mit1003.MIT1003_ENV}) at a folder with stimuli/*.jpg (the 1003 MIT1003
images, .jpg names as in fixations.mat) and fixations.mat in the NUS layout (NUS-VIP/ksvd-saliency,
data/mit/). Without a manual_dir, shared/datasets/mit1003 beside the checkout is used if present.
"""

    def _info(self) -> tfds.core.DatasetInfo:
        return self._fixation_info(
            "MIT1003 free-viewing fixations (15 observers, 3 s) resized to 1024x768 / 768x1024 by "
            "orientation and downsampled by 2, as in DeepGaze II.",
            "http://people.csail.mit.edu/tjudd/WherePeopleLook/",
            _MIT1003_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _located_root(mit1003.find_mit1003_root, dl_manager, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        log.info("building MIT1003 from %s", root)
        return {"train": self._generate_examples(dataset=mit1003.mit1003(root))}

    def _generate_examples(self, dataset: Dataset):
        yield from self._examples(dataset, datasets.paper_sizes(dataset.image_sizes))


class Salicon(_FixationBuilder):
    """SALICON mouse-tracking "fixations", images downsampled by 2 (320x240); configs "2015" and "2017"."""

    WITH_DURATION = False
    RELEASE_NOTES = {"1.0.0": "Official release format; the `fixations` field, downsampled by 2."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=edition, description=f"SALICON {edition} fixation release")
        for edition in salicon.EDITIONS
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = salicon.INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self._fixation_info(
            "SALICON (10,000 train / 5,000 validation COCO images, mouse-contingent free viewing), "
            "fixations from the official per-image .mat files, images and fixations downsampled by 2.",
            "http://salicon.net/",
            _SALICON_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _manual_dir(dl_manager)
        if root is None:
            raise FileNotFoundError(f"SALICON needs a manual_dir.\n{salicon.INSTRUCTIONS}")
        edition = self.builder_config.name
        salicon.check_layout(root, edition)
        return {
            split: self._generate_examples(root=root, edition=edition, split=split) for split in salicon.SPLIT_DIRS
        }

    def _generate_examples(self, root: Path, edition: str, split: str):
        dataset = salicon.load_salicon(root, edition, split, on_invalid="drop")
        yield from self._examples(dataset, dataset.image_sizes // 2)


class Osie(_FixationBuilder):
    """OSIE at the paper's working size (800x600 -> 512x384), one split "train"; configs by fixation source.

    "eye": the eye fixations of 15 observers (with durations); "mouse_amt" / "mouse_lab": the
    mouse tracking of 835 crowd workers / 16 lab participants as pseudo-fixations with the
    default `mouse_fixations.PseudoFixationConfig` (SALICON's procedure, docs/osie.md).
    """

    RELEASE_NOTES = {"1.0.0": "NUS-VIP release; mouse pseudo-fixations: max step 24 px, max dispersion 48 px, >= 2 samples."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="eye", description="eye fixations (15 observers, 3 s free viewing)"),
        tfds.core.BuilderConfig(name="mouse_amt", description="pseudo-fixations of Mechanical Turk mouse tracking"),
        tfds.core.BuilderConfig(name="mouse_lab", description="pseudo-fixations of lab mouse tracking"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Point manual_dir (or ${osie.OSIE_ENV}) at the data/ folder of NUS-VIP/predicting-human-gaze-beyond-pixels:
stimuli/*.jpg, eye/fixations.mat, mouse_amt/<image>.mat, mouse_lab/<image>.mat. Without a manual_dir,
shared/datasets/osie beside the checkout is used if present.
"""

    @property
    def WITH_DURATION(self) -> bool:  # noqa: N802 (the base class's attribute name)
        return self.builder_config.name == "eye"

    def _info(self) -> tfds.core.DatasetInfo:
        return self._fixation_info(
            f"OSIE (700 images with many semantic objects), {self.builder_config.description}, images and "
            "fixations resized from 800x600 to 512x384 (the DeepGaze II working size).",
            "https://github.com/NUS-VIP/predicting-human-gaze-beyond-pixels",
            _OSIE_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = _located_root(osie.find_osie_root, dl_manager, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        log.info("building OSIE %s from %s", self.builder_config.name, root)
        return {"train": self._generate_examples(root=root, source=self.builder_config.name)}

    def _generate_examples(self, root: Path, source: str):
        if source == "eye":
            dataset = osie.osie_eye(root)
        else:
            dataset = osie.osie_mouse(root, source.removeprefix("mouse_"))
        yield from self._examples(dataset, datasets.paper_sizes(dataset.image_sizes))


def prepare(
    name: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None
) -> tfds.core.DatasetBuilder:
    """Builds ``name`` ("mit1003", "salicon/2015", "salicon/2017", "osie/eye", "osie/mouse_amt" or
    "osie/mouse_lab") as array_record under ``data_dir``.

    A no-op when already built. Read it back with ``tfds.data_source(name, data_dir=data_dir)``.
    """
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=None if manual_dir is None else os.fspath(manual_dir)),
    )
    return builder
