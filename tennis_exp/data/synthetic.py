"""The synthetic twin as a dataset: generated into `data.root` on first use, regenerated when
its settings change (the simulator: tennis_exp/synthetic/). The twin with idle clips
(data.background) is the twin without them plus an `idle` folder per split, so one root serves
both: the idle clips are added beside the event clips, never replacing them.

The layout is the real one, ``<root>/{train,val,test}/<action>/<video>/frame_%04d.jpg``, and the
``full`` preset reproduces the real split's window counts exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tennis_exp.config import IDLE_ACTION
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

    A twin with idle clips serves a run without `background` as it is (the loader leaves `idle`
    out); one without gets them added. So a study of data.background shares one twin, and never
    replaces the frames that its other jobs are reading.
    """
    check_preset(preset)
    root = Path(root)
    events = {
        "generator_version": _GENERATOR_VERSION,
        "sport": sport,
        "preset": preset,
        "seed": seed,
        "image_size": image_size,
    }
    # The key only when on, so a twin made before it existed is not regenerated.
    with_idle = {**events, "background": True}
    settings, serves = (with_idle, [with_idle]) if background else (events, [events, with_idle])
    if read_marker(root / _MARKER) in serves:
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    with locked(root.parent / f".{root.name}.synthetic.lock"):
        # Another process (a parallel sweep job) may have generated it while we waited.
        marker = read_marker(root / _MARKER)
        if marker in serves:
            return False
        _check_ours(root)
        prefix = f".{root.name}.synthetic-tmp-"
        # Holding the lock, any such sibling is a leftover of a killed generator.
        for stale in root.parent.glob(prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
        try:
            if background and marker == events:
                generate(tmp, preset, seed, image_size, sport, background, idle_only=True)
                _add_idle(tmp, root, settings)
            else:
                generate(tmp, preset, seed, image_size, sport, background)
                _install(tmp, root, settings)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _check_ours(root: Path) -> None:
    if not (root / _MARKER).exists() and any((root / split).exists() for split in SPLITS):
        raise UserError(
            f"{root} holds train/val/test folders that the synthetic generator did not "
            f"write (no {_MARKER}); refusing to replace what may be real data. Point "
            "data.root at a new folder for the synthetic dataset."
        )


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


def _add_idle(tmp: Path, root: Path, settings: dict) -> None:
    # The event clips stay in place (another job may be reading them); an `idle` folder there
    # is a leftover of an interrupted addition (the marker is written last).
    for split in SPLITS:
        shutil.rmtree(root / split / IDLE_ACTION, ignore_errors=True)
        os.replace(tmp / split / IDLE_ACTION, root / split / IDLE_ACTION)
    write_marker(root / _MARKER, settings)
