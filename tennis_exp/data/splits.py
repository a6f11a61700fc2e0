"""Which split each video belongs to: the grouped, stratified rule and the manifest CSV.

The rule (`assign`): videos of one player (a name starting with THETIS's ``p<N>_``) form one
group, so a player is in one split only; a video whose name carries no player, or every video
with ``by_player=False``, is a group of its own. The groups are shuffled with ``seed`` (ordered
by a hash of the seed and the group's key) and placed one by one in the split where they most
reduce the gap to the target count of every action: the split minimising the sum over actions
of ((count - target) / action total)^2, ties going to the earlier of train, val, test. Targets
are the ratios times each action's video count, so the ratios hold per action (stratified) as
closely as whole groups allow: to one video without players, to about one player's videos with
them. The same listing, ratios and seed give the same split on any machine: nothing depends on
the order of a directory listing, the platform or a library's random generator.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tennis_exp.errors import UserError
from tennis_exp.files import atomic_write

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("video", "action", "player", "split", "frames")
_PLAYER = re.compile(r"p\d+(?=_)", re.IGNORECASE)


class VideoRef(NamedTuple):
    """A video as the split sees it: its name (the file name without extension, which is also
    its frame folder), its action folder, and its player ("" when the name carries none)."""

    name: str
    action: str
    player: str

    @property
    def key(self) -> tuple[str, str]:
        return self.action, self.name


def player_of(name: str) -> str:
    """THETIS's player id, `p12` in `p12_backhand_s1`; "" when the name does not start so."""
    match = _PLAYER.match(name)
    return match.group(0).lower() if match else ""


def assign(
    videos: Sequence[VideoRef], ratios: Sequence[float], seed: int, by_player: bool = True
) -> list[str]:
    """The split of every video (see the module docstring for the rule)."""
    actions = sorted({v.action for v in videos})
    column = {action: i for i, action in enumerate(actions)}
    groups: dict[str, list[int]] = {}
    for i, video in enumerate(videos):
        # "/" cannot occur in a player id, so a video's own key never meets a player's.
        key = video.player if by_player and video.player else f"{video.action}/{video.name}"
        groups.setdefault(key, []).append(i)
    # A seeded order from a hash, not from numpy's generators, whose streams may change
    # between versions: the split must not depend on the machine.
    keys = sorted(groups, key=lambda key: hashlib.sha256(f"{seed}\0{key}".encode()).digest())

    totals = np.zeros(len(actions))
    for video in videos:
        totals[column[video.action]] += 1
    targets = np.asarray(ratios, dtype=float)[:, None] * totals
    counts = np.zeros_like(targets)
    splits = [""] * len(videos)
    for key in keys:
        added = np.zeros(len(actions))
        for i in groups[key]:
            added[column[videos[i].action]] += 1
        gap_after = ((counts + added - targets) / totals) ** 2
        gap_before = ((counts - targets) / totals) ** 2
        best = int(np.argmin((gap_after - gap_before).sum(axis=1)))
        counts[best] += added
        for i in groups[key]:
            splits[i] = SPLITS[best]
    return splits


def digest(videos: Sequence[VideoRef], splits: Sequence[str]) -> str:
    """A short fingerprint of a split: the same videos in the same splits, the same digest."""
    rows = sorted(f"{v.action}/{v.name}\0{s}\n" for v, s in zip(videos, splits, strict=True))
    return hashlib.sha256("".join(rows).encode()).hexdigest()[:16]


def write_manifest(
    path: Path, videos: Sequence[VideoRef], splits: Sequence[str], frames: dict
) -> None:
    """The split as CSV (video, action, player, split, frames), sorted by action and video;
    `frames` maps a video's key to its frame count, blank for a video not prepared."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(MANIFEST_COLUMNS)
        for video, split in sorted(zip(videos, splits, strict=True), key=lambda r: r[0].key):
            writer.writerow(
                [video.name, video.action, video.player, split, frames.get(video.key, "")]
            )


def from_manifest(videos: Sequence[VideoRef], path: Path) -> tuple[list[str], int]:
    """The split of every video as a manifest gives it, and how many of the manifest's videos
    are not among `videos`. A video the manifest does not list is a UserError: its split would
    be a guess."""
    listed = read_manifest(path)
    unlisted = [v for v in videos if v.key not in listed]
    if unlisted:
        raise UserError(
            f"{len(unlisted)} video(s) are not in split.manifest={path}, the first "
            f"{'/'.join(unlisted[0].key)}; add them to it, or drop split.manifest to split anew"
        )
    return [listed[v.key] for v in videos], len(listed) - len(videos)


def read_manifest(path: Path) -> dict[tuple[str, str], str]:
    """(action, video) -> split, from a manifest written by `write_manifest` (any lab's)."""
    try:
        with open(path, newline="") as source:
            rows = list(csv.DictReader(source))
            header = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise UserError(f"split.manifest={path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"split.manifest={path} cannot be read: {err}") from None
    missing = [c for c in ("video", "action", "split") if c not in header]
    if missing:
        raise UserError(
            f"split.manifest={path} lacks column(s) {', '.join(missing)}; "
            f"expected a CSV with columns {', '.join(MANIFEST_COLUMNS)}"
        )
    splits: dict[tuple[str, str], str] = {}
    for line, row in enumerate(rows, start=2):
        key = (row["action"], row["video"])
        if row["split"] not in SPLITS:
            raise UserError(
                f"split.manifest={path}, line {line}: split {row['split']!r} is not one of "
                f"{', '.join(SPLITS)}"
            )
        if key in splits:
            raise UserError(f"split.manifest={path}, line {line}: {'/'.join(key)} is listed twice")
        splits[key] = row["split"]
    return splits
