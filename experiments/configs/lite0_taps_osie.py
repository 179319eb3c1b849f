"""`lite0_taps` (EfficientNet-Lite0 on DeepGaze IIE's layers, paper readout, inner stopping) with every fold's
readout starting from a readout pretrained on OSIE's mouse pseudo-fixations: the paper's protocol (SALICON
pretraining, then the MIT1003 crossvalidation), on the mouse-tracking data obtainable here.

    python -m experiments.pretrain_osie --config lite0_taps --workdir runs/pretrain_osie_lite0_taps
    python -m experiments.crossval_mit1003 --config lite0_taps_osie

Same as ``--config lite0_taps --init runs/pretrain_osie_lite0_taps/model.npz --workdir runs/crossval_lite0_taps_osie``.
The pretraining sees no MIT1003 image (it stops on OSIE's eye fixations, `docs/pretrain_osie.md`); fixed
by the paper's protocol, not by a MIT1003 score.
"""

import dataclasses
from pathlib import Path

from experiments.configs import Experiment, get


def pretrained_on_osie(base: str, instances: int = 1, fixations: str = "mouse", first_seed: int = 0,
                       workdir: Path | None = None) -> Experiment:
    """Configuration ``base`` with each fold's readout starting from ``runs/pretrain_osie_<base>/model.npz``
    (made by `experiments.pretrain_osie` with ``--config <base>``), into ``runs/crossval_<base>_osie``.

    With ``instances`` > 1, that many readout instances per fold, instance i starting from the pretraining
    with ``--init-seed <first_seed + i>``, ``runs/pretrain_osie_<base>_seed<first_seed + i>/model.npz`` (seed 0:
    ``runs/pretrain_osie_<base>/model.npz``), into ``runs/crossval_<base>_osie_x<instances>``. With ``fixations``
    other than "mouse" (the pretraining's ``--fixations``), the pretrainings are
    ``runs/pretrain_osie_<fixations>_<base>...`` and the workdir ``runs/crossval_<base>_osie_<fixations>...``;
    ``workdir`` replaces that name."""
    tag = "" if fixations == "mouse" else f"_{fixations}"
    seeds = range(first_seed, first_seed + instances)
    inits = tuple(Path(f"runs/pretrain_osie{tag}_{base}{f'_seed{i}' if i else ''}/model.npz") for i in seeds)
    suffix = f"_x{instances}" if instances > 1 else ""
    return dataclasses.replace(get(base), workdir=workdir or Path(f"runs/crossval_{base}_osie{tag}{suffix}"),
                               seeds=instances, init=inits[0] if instances == 1 else inits)


def pool_of(first: str, second: str, workdir: Path) -> Experiment:
    """The configuration of run ``first`` with the instances of the runs ``first`` and ``second`` (its
    ``members``, pooled by `experiments.pool_instances` into ``workdir``) and their inits."""
    runs = get(first), get(second)
    return dataclasses.replace(runs[0], workdir=workdir, seeds=runs[0].seeds + runs[1].seeds,
                               init=runs[0].init + runs[1].init, members=(first, second))


def get_config() -> Experiment:
    return pretrained_on_osie("lite0_taps")
