"""DeepGaze II end to end: backbone taps -> feature grid -> readout -> finalizer.

Shapes, for a working image of h x w pixels (see `images.working_size`):
  backbone taps        (B, h / s_t, w / s_t, C_t) for each tap t (stride s_t)
  feature grid         (B, h / 16, w / 16, sum C_t)  taps resized to the finest tap
  readout saliency     (B, h / 16, w / 16)
  density grid         (B, h / cell, w / cell)   saliency upsampled bilinearly,
                       blurred, centre bias added, log-softmax (finalizer)
  pixels               (B, h, w) by exact nearest upsampling (`finalizer.expand_to_pixels`)

A model is a `DeepGazeParams` pytree: the frozen backbone weights, the Flax
variables of the head (readout + finalizer) stacked along a leading *mixture*
axis of M components, and an optional centre-bias template. With M > 1 the
components are averaged in probability space, like the paper's ensemble of the
ten crossvalidation models:  p(x) = (1/M) sum_m p_m(x).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepgaze_jax.atomic_file import atomic_path
from deepgaze_jax.backbones import Backbone, get_backbone
from deepgaze_jax.densities import resize_log_density
from deepgaze_jax.finalizer import Finalizer
from deepgaze_jax.model_io import read_model_file
from deepgaze_jax.prepared_head import PreparedHead, prepare_head, prepared_log_density
from deepgaze_jax.readout import PAPER_FEATURES, READOUTS, Readout
from deepgaze_jax.xla_options import jit


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a model's architecture (hashable: a static jit argument).

    Attributes:
      backbone: registry name (`backbones.registered()`; `backbones.register` adds one).
      taps: backbone taps to read out; None takes the backbone's default taps.
      readout_features: widths of the 1x1 layers, paper (16, 32, 2, 1); (1,) is linear.
      readout_kind: `readout.KINDS`: "deepgaze2" (fixed standardisation, ReLU) or "iie" (DeepGaze IIE's
        per-image LayerNorm and softplus); written to JSON only when not "deepgaze2", so model files
        and run setups from before the field existed read back equal.
      long_side: longer side of the working space in pixels (paper: 1024 / 2 = 512).
      cell: density-grid cell size in working pixels.
      init_sigma, max_sigma: blur width at initialisation and its upper bound (working pixels).
    """

    backbone: str = "efficientnet_lite0"
    taps: tuple[str, ...] | None = None
    readout_features: tuple[int, ...] = PAPER_FEATURES
    long_side: int = 512
    cell: int = 4
    init_sigma: float = 16.0
    max_sigma: float = 64.0
    readout_kind: str = "deepgaze2"

    def get_backbone(self) -> Backbone:
        return get_backbone(self.backbone)

    def resolved_taps(self) -> tuple[str, ...]:
        return tuple(self.taps) if self.taps is not None else self.get_backbone().taps

    def grid_stride(self) -> int:
        """Stride of the feature grid: the finest of the chosen taps."""
        strides = self.get_backbone().strides
        return min(strides[t] for t in self.resolved_taps())

    def num_channels(self) -> int:
        channels = self.get_backbone().channels
        return sum(channels[t] for t in self.resolved_taps())

    @classmethod
    def for_readout(cls, backbone: str, readout: str, taps: Sequence[str] | None = None) -> "ModelConfig":
        """The config of ``backbone`` (its ``taps``; None: the default ones) with the readout named ``readout``
        (a key of `readout.READOUTS`: its widths and kind)."""
        spec = READOUTS[readout]
        return cls(backbone=backbone, taps=taps, readout_features=spec.features, readout_kind=spec.kind)

    def readout(self, **kwargs) -> Readout:
        """The `readout.Readout` of this config (widths and kind); ``kwargs`` go to the module (e.g. ``name``)."""
        return Readout(self.readout_features, self.readout_kind, **kwargs)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["readout_kind"] == ModelConfig.readout_kind:
            del fields["readout_kind"]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        raw = json.loads(text)
        for key in ("taps", "readout_features"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        return cls(**raw)


class SaliencyHead(nn.Module):
    """Readout + finalizer: (B, h, w, C) grid, (B, H, W) log centre bias -> (B, H, W) log density."""

    config: ModelConfig

    @nn.compact
    def __call__(self, grid: jnp.ndarray, log_centerbias: jnp.ndarray) -> jnp.ndarray:
        saliency = self.config.readout(name="readout")(grid)
        finalizer = Finalizer(
            cell=self.config.cell, init_sigma=self.config.init_sigma, max_sigma=self.config.max_sigma,
            name="finalizer",
        )
        return finalizer(saliency, log_centerbias)


@flax.struct.dataclass
class DeepGazeParams:
    """A complete model (a pytree; ``config`` is static).

    Attributes:
      backbone_weights: frozen backbone arrays (`Backbone.load_weights`).
      head: Flax variables of `SaliencyHead` ({"params", "stats"}), every leaf with a
        leading mixture axis of size M.
      centerbias: (th, tw) log density over the unit square (resized to each image), or None
        for a uniform prior.
      config: the `ModelConfig`.
    """

    backbone_weights: Any
    head: Any
    centerbias: jnp.ndarray | None
    config: ModelConfig = flax.struct.field(pytree_node=False)

    @property
    def num_components(self) -> int:
        return int(jax.tree_util.tree_leaves(self.head)[0].shape[0])


def feature_grid(config: ModelConfig, backbone_weights, images: jnp.ndarray, dtype=jnp.float32) -> jnp.ndarray:
    """(B, h, w, 3) 0..255 RGB working images -> (B, h / stride, w / stride, C) concatenated taps.

    ``dtype`` is the backbone's compute dtype (e.g. ``jnp.bfloat16``, for backbones that take
    ``dtype=``); the grid is float32 either way.
    """
    backbone = config.get_backbone()
    taps = config.resolved_taps()
    options = {} if jnp.dtype(dtype) == jnp.float32 else {"dtype": jnp.dtype(dtype)}
    feats = backbone.features(backbone_weights, images.astype(jnp.float32), taps, **options)
    b, (h, w) = images.shape[0], feature_grid_shape(config, images.shape[1:3])
    return jnp.concatenate(
        [jax.image.resize(feats[t], (b, h, w, feats[t].shape[-1]), "linear") for t in taps], axis=-1
    )


def feature_grid_shape(config: ModelConfig, working_shape: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the feature grid for a working image of ``working_shape`` (its size over the grid stride)."""
    stride = config.grid_stride()
    return working_shape[0] // stride, working_shape[1] // stride


def density_grid_shape(config: ModelConfig, working_shape: Sequence[int]) -> tuple[int, int]:
    """(H, W) of the density grid for a working image of ``working_shape`` (h, w)."""
    return working_shape[0] // config.cell, working_shape[1] // config.cell


def centerbias_on_grid(template: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    """(th, tw) log density over the unit square -> (H, W) normalised log density on a grid.

    The template is resampled by `densities.resize_log_density`; None gives uniform.
    """
    if template is None:
        return np.full(tuple(shape), -math.log(shape[0] * shape[1]), np.float32)
    return resize_log_density(np.asarray(template), shape)


def head_log_density(config: ModelConfig, head, grid: jnp.ndarray, log_centerbias: jnp.ndarray) -> jnp.ndarray:
    """Mixture of M heads (leading axis of ``head``) -> (B, H, W) log density on the density grid: each component
    `SaliencyHead`'s, averaged in probability (by `prepared_head`, the same maths with the components' first
    layers as one matmul)."""
    prepared = prepare_head(config, head, grid.shape[1:3], log_centerbias.shape[-2:])
    return prepared_log_density(config, prepared, grid, log_centerbias)


@functools.partial(jit, static_argnames="backbone_dtype")
def log_density_grid(
    params: DeepGazeParams, images: jnp.ndarray, log_centerbias: jnp.ndarray, backbone_dtype=jnp.float32
) -> jnp.ndarray:
    """(B, h, w, 3) working images, (B, H, W) log centre bias -> (B, H, W) log density over cells.

    ``backbone_dtype`` (static): the backbone's compute dtype; the head always runs in float32.
    """
    grid = feature_grid(params.config, params.backbone_weights, images, backbone_dtype)
    return head_log_density(params.config, params.head, grid, log_centerbias)


@functools.partial(jit, static_argnames=("config", "backbone_dtype"))
def prepared_log_density_grid(config: ModelConfig, backbone_weights, prepared: PreparedHead, images: jnp.ndarray,
                              log_centerbias: jnp.ndarray, backbone_dtype=jnp.float32) -> jnp.ndarray:
    """`log_density_grid` with the head's parameter-only work done beforehand (`prepared_head.cached_prepare`
    for ``images``' feature-grid and ``log_centerbias``' density-grid shapes), as `predict_density` runs it."""
    grid = feature_grid(config, backbone_weights, images, backbone_dtype)
    return prepared_log_density(config, prepared, grid, log_centerbias)


@functools.partial(jax.jit, static_argnums=(0, 2))
def init_head_variables(config: ModelConfig, key: jax.Array, channels: int | None = None):
    """Fresh variables of one `SaliencyHead` (no mixture axis) for grids of ``channels`` channels
    (default: the backbone's taps). The values do not depend on the grid's spatial size. Compiled once per
    config: run op by op, the init took 0.4-5 s per call (ten per crossvalidation); compiled, the values are
    the same to the bit (`tests/test_model.py`)."""
    channels = config.num_channels() if channels is None else channels
    grid = jnp.zeros((1, 2, 2, channels), jnp.float32)
    return SaliencyHead(config).init(key, grid, jnp.zeros((1, 4, 4), jnp.float32))


def init_head(config: ModelConfig, key: jax.Array, num_components: int = 1):
    """Fresh head variables with a leading mixture axis of ``num_components``."""
    keys = jax.random.split(key, num_components)
    return jax.vmap(lambda k: init_head_variables(config, k))(keys)


def init_params(
    config: ModelConfig = ModelConfig(),
    key: jax.Array | None = None,
    backbone_weights=None,
    centerbias: np.ndarray | None = None,
    num_components: int = 1,
) -> DeepGazeParams:
    """An untrained model; loads the backbone's default weights unless given."""
    key = jax.random.PRNGKey(0) if key is None else key
    if backbone_weights is None:
        backbone_weights = config.get_backbone().load_weights()
    return DeepGazeParams(
        backbone_weights=jax.tree_util.tree_map(jnp.asarray, dict(backbone_weights)),
        head=init_head(config, key, num_components),
        centerbias=None if centerbias is None else jnp.asarray(centerbias, jnp.float32),
        config=config,
    )


def mixture(models: Sequence[DeepGazeParams]) -> DeepGazeParams:
    """One model whose density is the average (in probability) of ``models``' densities.

    All models must share config and backbone; the first one's centre bias is kept.
    """
    if not models:
        raise ValueError("mixture of no models")
    config = models[0].config
    for m in models[1:]:
        if m.config != config:
            raise ValueError(f"cannot mix models with different configs: {m.config} vs {config}")
    head = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *[m.head for m in models])
    return models[0].replace(head=head)


MODEL_FORMAT = "deepgaze-jax-model-v1"


def save_model(params: DeepGazeParams, path: str | os.PathLike) -> None:
    """Writes the head, centre bias and config to a NumPy ``.npz`` (backbone weights are not stored)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params.head), sep="/")
    arrays = {f"head/{k}": np.asarray(v) for k, v in flat.items()}
    if params.centerbias is not None:
        arrays["centerbias"] = np.asarray(params.centerbias, np.float32)
    meta = json.dumps({"format": MODEL_FORMAT, "config": json.loads(params.config.to_json())})
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, meta=np.frombuffer(meta.encode(), np.uint8), **arrays)


def save_head(config: ModelConfig, variables, centerbias, path: str | os.PathLike) -> None:
    """Saves one head's variables (no mixture axis, e.g. a fold's best) as a one-component model.

    ``centerbias`` is the (th, tw) log-density template stored with it; the backbone weights are
    not stored (`load_model` loads them from the backbone's own source).
    """
    head = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], variables)
    centerbias = None if centerbias is None else jnp.asarray(centerbias, jnp.float32)
    save_model(DeepGazeParams(backbone_weights={}, head=head, centerbias=centerbias, config=config), path)


def load_model_file(path: str | os.PathLike, backbone_weights=None) -> DeepGazeParams:
    """Loads one model file saved by `save_model` (no pickle is ever read; `model_io` validates it all).

    The backbone weights are loaded from the backbone's own source unless given. Raises
    `model_io.ModelFileError` (a ValueError naming the file) for a damaged, oversized or
    inconsistent file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    contents = read_model_file(
        path, MODEL_FORMAT, lambda raw: ModelConfig.from_json(json.dumps(raw)), init_head, backbone_weights is not None
    )
    if backbone_weights is None:
        backbone_weights = contents.config.get_backbone().load_weights()
    return DeepGazeParams(
        backbone_weights=jax.tree_util.tree_map(jnp.asarray, dict(backbone_weights)),
        head=flax.traverse_util.unflatten_dict(jax.tree_util.tree_map(jnp.asarray, contents.head), sep="/"),
        centerbias=None if contents.centerbias is None else jnp.asarray(contents.centerbias),
        config=contents.config,
    )


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """Models whose densities are averaged in probability, p(x) = (1/K) sum_k p_k(x) (e.g. one per backbone,
    as DeepGaze IIE averages backbones). Unlike `mixture`, the members may differ in backbone and config.

    `predict_density` and every CLI command take one like a single model; iterating gives the members.

    Attributes:
      members: the models, each weighing 1/K.
      names: the members' bundled names (`BUNDLED_MODELS`) when loaded by name, else empty.
    """

    members: tuple[DeepGazeParams, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "names", tuple(self.names))
        if not self.members or not all(isinstance(m, DeepGazeParams) for m in self.members):
            raise ValueError("an Ensemble needs one or more models (DeepGazeParams); nest no Ensembles, use ensemble()")
        if self.names and len(self.names) != len(self.members):
            raise ValueError(f"an Ensemble of {len(self.members)} models got {len(self.names)} names")

    def __iter__(self):
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


Model = Union[DeepGazeParams, Ensemble]


def ensemble_members(model: Union[Model, Sequence[Model]]) -> tuple[DeepGazeParams, ...]:
    """The single models of a model, an `Ensemble` or a list of them (nested ensembles flattened, so each
    single model weighs the same)."""
    if isinstance(model, DeepGazeParams):
        return (model,)
    if isinstance(model, Ensemble):
        return model.members
    if isinstance(model, (list, tuple)) and model:
        return tuple(m for part in model for m in ensemble_members(part))
    raise ValueError(
        f"expected a model (DeepGazeParams), an Ensemble or a non-empty list of models, got {type(model).__name__}"
    )


def ensemble(models: Sequence[Model]) -> Model:
    """One model for ``models``: the model itself if there is one, else the `Ensemble` of all their members."""
    members = ensemble_members(list(models))
    if len(members) == 1:
        return members[0]
    names = tuple(n for m in models for n in (m.names if isinstance(m, Ensemble) else ()))
    return Ensemble(members, names if len(names) == len(members) else ())


# Bundled models trained on MIT1003 (README, model card; `experiments.bundle_models` writes them): single
# names -> files in `ASSETS`. A name "a+b" is the `Ensemble` of bundled models a and b.
BUNDLED_MODELS = {
    "lite0": "deepgaze2_mit1003_lite0.npz",
    "lite1": "deepgaze2_mit1003_lite1.npz",
    "lite2": "deepgaze2_mit1003_lite2.npz",
}
ENSEMBLE_SEPARATOR = "+"
DEFAULT_MODEL = "lite0+lite1+lite2"  # what load_model() and the CLI load: the README model card says why
ASSETS = Path(__file__).parent / "assets"


def bundled_members(name: str) -> tuple[str, ...] | None:
    """The bundled single names that ``name`` stands for ("default" is `DEFAULT_MODEL`, "lite0+lite2" is
    ("lite0", "lite2")), or None if it names none (then it is a file path)."""
    parts = tuple((DEFAULT_MODEL if name == "default" else name).split(ENSEMBLE_SEPARATOR))
    return parts if all(p in BUNDLED_MODELS for p in parts) else None


def bundled_model_path(name: str) -> Path:
    """The file of bundled single model ``name`` (a key of `BUNDLED_MODELS`) inside the package."""
    return ASSETS / BUNDLED_MODELS[name]


def _load_bundled(name: str, backbone_weights) -> DeepGazeParams:
    path = bundled_model_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"bundled model {name!r} is not installed ({path} is missing): bundle it with "
            "`python -m experiments.bundle_models` (README, model card), or load another of "
            f"{sorted(n for n in BUNDLED_MODELS if bundled_model_path(n).is_file())}"
        )
    return load_model_file(path, backbone_weights)


def load_model(path: str | os.PathLike = "default", backbone_weights=None) -> Model:
    """A model file (`save_model`) or a bundled model trained on MIT1003, by name (README, model card).

    Names: ``"default"`` (`DEFAULT_MODEL`, an `Ensemble`), ``"lite0"`` (the fastest single model),
    ``"lite1"``, ``"lite2"`` (`BUNDLED_MODELS`, each a `DeepGazeParams`), and any of them joined by ``+``
    (``"lite0+lite2"``: their `Ensemble`). Anything else is a file path. No pickle is ever read:
    `model_io` validates every file (`load_model_file`). ``backbone_weights`` replaces the
    backbone's own weights; it is one backbone's, so an ensemble refuses it.

        >>> import deepgaze_jax as dg
        >>> model = dg.load_model()                              # the default: an Ensemble
        >>> log_density = dg.predict_density(model, "photo.jpg") # its members averaged in probability
        >>> fast = dg.load_model("lite0")                        # one DeepGazeParams, the fastest
    """
    members = bundled_members(str(path))
    if members is None:
        return load_model_file(path, backbone_weights)
    if len(members) > 1 and backbone_weights is not None:
        raise ValueError(f"{path!r} is an ensemble of {members}: load its members one by one to give backbone_weights")
    models = tuple(_load_bundled(m, backbone_weights) for m in members)
    return models[0] if len(models) == 1 else Ensemble(models, members)
