"""The example photographs shipped in ``assets/examples`` (CC0; sources in its README.md).

They make the demo work with nothing beside the checkout: ``deepgaze-jax predict
--example`` and ``make demo`` predict densities for them.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"
EXAMPLE_NAMES = ("coffee", "chelsea")


def example_path(name: str) -> Path:
    """The file of example photograph ``name`` (one of `EXAMPLE_NAMES`)."""
    if name not in EXAMPLE_NAMES:
        raise KeyError(f"no example image {name!r}; choose one of {', '.join(EXAMPLE_NAMES)}")
    return EXAMPLES_DIR / f"{name}.jpg"


def example_paths() -> list[Path]:
    """All example photographs, in `EXAMPLE_NAMES` order."""
    return [example_path(name) for name in EXAMPLE_NAMES]
