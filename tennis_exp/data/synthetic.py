"""The synthetic twin as a dataset: generated into `data.root` on first use, regenerated when
its settings change (the simulator: tennis_exp/synthetic/).

The layout is the real one, ``<root>/{train,val,test}/<action>/<video>/frame_%04d.jpg``, and the
``full`` preset reproduces the real split's window counts exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tennis_exp.errors import UserError
from tennis_exp.files import locked, read_marker, write_marker
from tennis_exp.synthetic.generate import generate
from tennis_exp.synthetic.plan import SPLITS, check_preset

# Bump whenever the output for given settings changes, so existing datasets are regenerated.
_GENERATOR_VERSION = 3
_MARKER = ".synthetic.json"


def ensure_synthetic(
    root: Path,
    preset: str,
    seed: int,
    image_size: int,
    sport: str = "tennis",
    background: bool = False,
) -> bool:
    """Generate the dataset into `root` unless it already holds one made with the same settings.

    Returns True if it generated. The marker ``root/.synthetic.json`` (settings and generator
    version) is written last, so an interrupted generation is redone; a root whose marker differs
    loses its split folders and marker and is regenerated. Frames are rendered into a temporary
    sibling directory and renamed into place, so readers never see half a dataset. Split folders
    without any marker may be a real dataset: they are left alone and a UserError is raised.
    """
    check_preset(preset)
    root = Path(root)
    settings = {
        "generator_version": _GENERATOR_VERSION,
        "sport": sport,
        "preset": preset,
        "seed": seed,
        "image_size": image_size,
        # Only when on, so a twin made before it existed is not regenerated.
        **({"background": True} if background else {}),
    }
    if read_marker(root / _MARKER) == settings:
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    with locked(root.parent / f".{root.name}.synthetic.lock"):
        # Another process (a parallel sweep job) may have generated it while we waited.
        if read_marker(root / _MARKER) == settings:
            return False
        if not (root / _MARKER).exists() and any((root / split).exists() for split in SPLITS):
            raise UserError(
                f"{root} holds train/val/test folders that the synthetic generator did not "
                f"write (no {_MARKER}); refusing to replace what may be real data. Point "
                "data.root at a new folder for the synthetic dataset."
            )
        prefix = f".{root.name}.synthetic-tmp-"
        # Holding the lock, any such sibling is a leftover of a killed generator.
        for stale in root.parent.glob(prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
        try:
            generate(tmp, preset, seed, image_size, sport, background)
            _install(tmp, root, settings)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _install(tmp: Path, root: Path, settings: dict) -> None:
    if not root.exists():
        write_marker(tmp / _MARKER, settings)
        os.replace(tmp, root)
        return
    # A marker that matches no settings first: a crash mid-swap leaves a root that is ours and
    # is regenerated next time.
    write_marker(root / _MARKER, {"generator_version": _GENERATOR_VERSION, "state": "replacing"})
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
        os.replace(tmp / split, root / split)
    write_marker(root / _MARKER, settings)
