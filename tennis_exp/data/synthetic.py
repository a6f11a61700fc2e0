"""Synthetic twin of the users' THETIS-derived dataset, for runs without the real videos.

The layout is the real one, ``<root>/{train,val,test}/<action>/<video>/frame_%04d.jpg``, and the
``full`` preset reproduces the real split's window counts exactly. Each video shows one player
from behind, framed large as in THETIS, repeating shots of one event: the event shows in the
ball's path and the swing over time, while a shared ready pose and the nuisances (overlapping
court positions, scale, mirroring, camera shake, lighting, noise, occluders, a stray ball) keep
any single frame a weak cue. A volley is a rally stroke played backwards, a little nearer the
net: the same frames in another order, so that a model that does not see their order has only
the player's spot to tell Net Play from Rally.

``sport="badminton"`` is the badminton twin, with the users' stroke folders: a white shuttle
that slows in flight and never bounces, a high net and short service lines on an indoor court,
an underhand serve and overhead clears; the same four events, the same window counts.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from tennis_exp.config import (
    BADMINTON_ACTIONS,
    EVENTS,
    THETIS_ACTIONS,
    THETIS_EXCLUDED,
    usable_cpus,
)
from tennis_exp.errors import UserError
from tennis_exp.files import write_text

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, concurrent generators are then unprotected
    fcntl = None

# Bump whenever the output for given settings changes, so existing datasets are regenerated.
_GENERATOR_VERSION = 3
_MARKER = ".synthetic.json"
_SPLITS = ("train", "val", "test")
_WINDOW = 16
_STRIDES = {"train": 8, "val": 16, "test": 16}

# split -> event -> windows. `full` is the real split; val/test keep the train class proportions.
_TARGETS: dict[str, dict[str, dict[str, int]]] = {
    "full": {
        "train": {"Smash": 839, "Net Play": 1597, "Rally": 4344, "Serve": 995},
        "val": {"Smash": 95, "Net Play": 181, "Rally": 493, "Serve": 113},
        "test": {"Smash": 103, "Net Play": 196, "Rally": 532, "Serve": 121},
    },
    "small": {
        "train": {"Smash": 134, "Net Play": 256, "Rally": 695, "Serve": 159},
        "val": {"Smash": 24, "Net Play": 45, "Rally": 123, "Serve": 28},
        "test": {"Smash": 25, "Net Play": 47, "Rally": 128, "Serve": 29},
    },
    "tiny": {
        "train": {"Smash": 8, "Net Play": 15, "Rally": 40, "Serve": 9},
        "val": {"Smash": 3, "Net Play": 4, "Rally": 10, "Serve": 3},
        "test": {"Smash": 3, "Net Play": 5, "Rally": 12, "Serve": 4},
    },
}
# Video length range in frames. THETIS clips are 2-4 s. small spreads its windows over many short
# clips (1-2 train windows each, ~950 videos): from ~130 longer ones a small CNN learned each
# video's look rather than the motion. tiny is short to be fast.
_LENGTHS = {"full": (56, 120), "small": (16, 27), "tiny": (24, 40)}
# Per split: videos per excluded action, and videos shorter than a window (both yield no windows).
_EXTRAS = {"full": (2, 3), "small": (1, 2), "tiny": (1, 1)}
_PLAN_SEED = 20240611
# Below this many frames a process pool costs more than it saves.
_POOL_MIN_FRAMES = 4000


class Video(NamedTuple):
    """One planned clip: its folder name, THETIS action folder and frame count."""

    name: str
    action: str
    length: int


def _windows(length: int, stride: int) -> int:
    """Windows the loader cuts from a video of `length` frames."""
    return (length - _WINDOW) // stride + 1 if length >= _WINDOW else 0


def expected_windows(preset: str) -> dict[str, dict[str, int]]:
    """split -> event -> window count the preset is built to produce (window 16, strides 8/16)."""
    _check_preset(preset)
    return {split: dict(counts) for split, counts in _TARGETS[preset].items()}


def ensure_synthetic(
    root: Path, preset: str, seed: int, image_size: int, sport: str = "tennis"
) -> bool:
    """Generate the dataset into `root` unless it already holds one made with the same settings.

    Returns True if it generated. The marker ``root/.synthetic.json`` (settings and generator
    version) is written last, so an interrupted generation is redone; a root whose marker differs
    loses its split folders and marker and is regenerated. Frames are rendered into a temporary
    sibling directory and renamed into place, so readers never see half a dataset. Split folders
    without any marker may be a real dataset: they are left alone and a UserError is raised.
    """
    _check_preset(preset)
    root = Path(root)
    settings = {
        "generator_version": _GENERATOR_VERSION,
        "sport": sport,
        "preset": preset,
        "seed": seed,
        "image_size": image_size,
    }
    if _read_marker(root) == settings:
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root):
        # Another process (a parallel sweep job) may have generated it while we waited.
        if _read_marker(root) == settings:
            return False
        if not (root / _MARKER).exists() and any((root / split).exists() for split in _SPLITS):
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
            _generate(tmp, preset, seed, image_size, sport)
            _install(tmp, root, settings)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def _check_preset(preset: str) -> None:
    if preset not in _TARGETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; valid: {sorted(_TARGETS)}")


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def _lock(root: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(root.parent / f".{root.name}.synthetic.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install(tmp: Path, root: Path, settings: dict) -> None:
    if not root.exists():
        _write_marker(tmp, settings)
        os.replace(tmp, root)
        return
    # A marker that matches no settings first: a crash mid-swap leaves a root that is ours and
    # is regenerated next time.
    _write_marker(root, {"generator_version": _GENERATOR_VERSION, "state": "replacing"})
    for split in _SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
        os.replace(tmp / split, root / split)
    _write_marker(root, settings)


def _write_marker(folder: Path, content: dict) -> None:
    write_text(folder / _MARKER, json.dumps(content, indent=2, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# Plan: which videos each split holds and how long they are (independent of the seed).


def plan(preset: str, sport: str = "tennis") -> dict[str, list[Video]]:
    """split -> videos (name, action folder, frame count), including excluded and short ones."""
    _check_preset(preset)
    looks_like = _SPORTS[sport].looks_like
    excluded = [a for a in looks_like if a not in _SPORTS[sport].actions]
    rng = np.random.default_rng([_PLAN_SEED, sorted(_TARGETS).index(preset)])
    low, high = _LENGTHS[preset]
    per_excluded, short = _EXTRAS[preset]
    plan = {}
    for split in _SPLITS:
        stride = _STRIDES[split]
        videos: list[tuple[str, int]] = []
        for event in EVENTS:
            actions = [a for a, e in _SPORTS[sport].actions.items() if e == event]
            offset = int(rng.integers(len(actions)))
            remaining = _TARGETS[preset][split][event]
            while remaining > 0:
                length = int(rng.integers(low, high + 1))
                if _windows(length, stride) >= remaining:
                    # The event's last video is cut so the event total is exact.
                    length = _WINDOW + (remaining - 1) * stride + int(rng.integers(stride))
                remaining -= _windows(length, stride)
                videos.append((actions[(len(videos) + offset) % len(actions)], length))
        for action in excluded:
            videos += [(action, int(rng.integers(low, high + 1))) for _ in range(per_excluded)]
        regular = list(_SPORTS[sport].actions)
        videos += [
            (regular[int(rng.integers(len(regular)))], int(rng.integers(6, _WINDOW)))
            for _ in range(short)
        ]
        order = rng.permutation(len(videos))
        plan[split] = [
            Video(f"p{i:04d}_{videos[j][0]}", videos[j][0], videos[j][1])
            for i, j in enumerate(order)
        ]
    return plan


# ---------------------------------------------------------------------------------------------
# Generation.


def _generate(out: Path, preset: str, seed: int, image_size: int, sport: str) -> None:
    tasks = []
    for split_index, (split, videos) in enumerate(plan(preset, sport).items()):
        for index, video in enumerate(videos):
            (out / split / video.action).mkdir(parents=True, exist_ok=True)
            tasks.append((out / split, split_index, index, video, seed, image_size, sport))
    # Longest first balances the pool; each video has its own RNG, so order does not matter.
    tasks.sort(key=lambda task: -task[3].length)
    # Frames are small files: beyond a few processes the disk, not the CPU, is the limit.
    workers = min(usable_cpus(), 8)
    if workers > 1 and sum(task[3].length for task in tasks) >= _POOL_MIN_FRAMES:
        # fork on Linux: workers only run numpy and PIL, and unlike spawn it does not re-run the
        # caller's main script, which breaks scripts without an `if __name__ == "__main__"`.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            list(pool.map(_write_video, tasks, chunksize=4))
    else:
        for task in tasks:
            _write_video(task)


def render_clip(
    video: Video, split_index: int, index: int, seed: int, image_size: int, sport: str = "tennis"
):
    """The frames (T, S, S, 3) uint8 of the `index`-th planned video of a split, the same
    whatever process renders it (each video has its own random stream)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, split_index, index]))
    event = _SPORTS[sport].looks_like[video.action]
    frames, _ = _render_video(
        event, video.action, video.length, image_size, rng, _cast(seed, sport)
    )
    return frames


def _write_video(task: tuple) -> None:
    split_dir, split_index, index, video, seed, image_size, sport = task
    frames = render_clip(video, split_index, index, seed, image_size, sport)
    folder = split_dir / video.action / video.name
    folder.mkdir()
    for t, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"frame_{t:04d}.jpg", quality=90)


# ---------------------------------------------------------------------------------------------
# Rendering. World units: the court's half length is 1; x across the court, d from the near
# baseline (net at d=1, far baseline at d=2), h above the ground. As in THETIS, a fixed camera
# stands behind the player at chest height and frames him large; image coordinates u (right)
# and v (down) are fractions of the image size.


class _Lines(NamedTuple):
    """A court's lines and net, in court units."""

    half_width: float  # doubles sideline
    singles: float  # singles sideline
    service: float  # service line distance from the net
    net_h: float


_TENNIS_COURT = _Lines(0.46, 0.346, 0.538, 0.077)
# 13.4 x 6.1 m, the short service line 1.98 m from the net, the net 1.55 m high.
_BADMINTON_COURT = _Lines(0.455, 0.387, 0.296, 0.23)
_PLAYER_H = 0.28  # a cartoon player, much taller than life so the swing is visible at 64 px
_SHOULDER = (0.15, -0.78)  # racket-side shoulder, in player heights from the feet (y down)
_ARM, _RACKET = 0.3, 0.32  # arm length and hand-to-racket-head-centre length, player heights
# Ball radius in player heights: a cartoon ball 5-6 px across at 64 px, as the player is drawn
# taller than life; a 2-3 px ball faded out in the small CNN's stride-2 convolutions.
_BALL_R = 0.09
_SHUTTLE_R = 0.075

# A volley is a rally stroke played backwards (from a spot a little nearer the net), so the
# same frames show either and their order tells the two apart: the ball meets the racket
# before it bounces instead of after, the racket swings high to low instead of low to high,
# and the player closes in on the net instead of being pushed back from it.
_PLAYED_BACKWARDS = {"Net Play": "Rally"}

# Per event: player depth range (overlapping, so position alone is a weak cue; wider ranges
# made the small preset unlearnable), frames of the outgoing ball and of the incoming ball.
_EVENT_TIMING = {
    "Serve": {"depth": (-0.1, 0.3), "n_out": (4, 5), "n_in": (7, 10)},
    "Smash": {"depth": (0.05, 0.45), "n_out": (3, 4), "n_in": (8, 10)},
    "Rally": {"depth": (-0.1, 0.5), "n_out": (5, 7), "n_in": (7, 9)},
}
# Top speed of the rally player's retreat, in court units a frame (a volleyer's approach).
_DRIFT = 0.02

# Racket-arm angle keyframes in degrees (0 = out to the racket side, 90 = straight up), as
# (frames after the contact, angle) and (frames before the next contact, angle). Between shots
# every event rests in the same ready pose (racket low in front, -60), so most single frames
# look alike; the swings are short, overhead for serve and smash. The rally stroke goes low to
# high: the racket drops, meets the ball low in front, rises over the other shoulder and falls
# back to the ready pose down the other side. Unwrapped, so each swing turns the intended way.
_SWING = {
    "Serve": ([(0, 85), (3, 230), (5, 300)], [(5, 300), (3, 370), (1, 420), (0, 445)]),
    "Smash": ([(0, 95), (3, 230), (5, 300)], [(5, 300), (3, 500), (0, 455)]),
    "Rally": ([(0, -30), (2, 45), (4, 120), (7, 300)], [(5, 300), (3, 250), (0, 330)]),
}

# The badminton twin: the serve is underhand (racket low in front, swung up through the
# shuttle), the rally stroke an overhead clear hit standing, the smash as in tennis.
_BADMINTON_SWING = {
    "Serve": ([(0, -40), (2, 10), (4, 40), (6, -60)], [(5, -60), (3, -110), (1, -80), (0, -40)]),
    "Smash": _SWING["Smash"],
    "Rally": ([(0, 105), (3, 210), (5, 290)], [(5, 290), (3, 390), (1, 440), (0, 465)]),
}

_COURTS = [  # (court, surround, back wall) RGB: hard blue, hard green, clay
    ((40, 85, 150), (60, 120, 80), (25, 60, 45)),
    ((60, 125, 90), (110, 60, 60), (30, 40, 70)),
    ((185, 100, 60), (165, 90, 55), (30, 70, 40)),
]
_CLOTHES = [
    (240, 240, 240),
    (200, 40, 40),
    (30, 40, 120),
    (30, 30, 30),
    (230, 120, 40),
    (120, 40, 140),
    (40, 150, 160),
    (160, 160, 160),
]
_RACKETS = [(200, 30, 30), (20, 20, 20), (30, 60, 200), (240, 120, 20)]
_SKINS = [(235, 195, 160), (200, 150, 110), (140, 95, 65), (90, 60, 40)]
_HAIR = [(30, 25, 20), (90, 60, 30), (200, 170, 100), (60, 60, 60)]
_HALLS = [  # (court, surround, back wall) RGB: green mat, wooden floor, blue mat, indoors
    ((45, 120, 75), (150, 110, 70), (40, 40, 50)),
    ((190, 140, 90), (120, 85, 55), (55, 45, 40)),
    ((60, 90, 120), (70, 70, 75), (30, 30, 45)),
]
_BALL = (215, 240, 60)
_SHUTTLE = (250, 250, 245)
# As in THETIS, a few players on a few courts perform every action: appearance is shared across
# events, so a model cannot learn events by remembering what each video looks like.
_PLAYERS = 8


class _Cast(NamedTuple):
    players: list[dict[str, tuple]]  # colour of each body part
    venues: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # court, surround, back wall
    sport: _Sport


@functools.lru_cache(maxsize=4)
def _cast(seed: int, sport: str = "tennis") -> _Cast:
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, 0xCA57]))
    players = [
        {
            part: palette[rng.integers(len(palette))]
            for part, palette in [
                ("shirt", _CLOTHES),
                ("shorts", _CLOTHES),
                ("skin", _SKINS),
                ("hair", _HAIR),
                ("racket", _RACKETS),
            ]
        }
        for _ in range(_PLAYERS)
    ]
    venues = [
        tuple(
            np.array(c, np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32) for c in court
        )
        for court in _SPORTS[sport].venues
    ]
    return _Cast(players, venues, _SPORTS[sport])


class _Camera(NamedTuple):
    f: float  # focal length, in image sizes
    cy: float  # horizon row
    x: float  # position on the court
    d: float
    height: float

    def project(self, x, d, h):
        z = d - self.d
        return 0.5 + self.f * (x - self.x) / z, self.cy + self.f * (self.height - h) / z

    def unproject(self, u, v, d):
        z = d - self.d
        return self.x + (u - 0.5) * z / self.f, self.height - (v - self.cy) * z / self.f


def _render_video(
    event: str, action: str, length: int, image_size: int, rng: np.random.Generator, cast: _Cast
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, S, S, 3) uint8 and the ball's pixel centre per frame (T, 2), NaN when hidden."""
    s_img = image_size
    backwards = event in _PLAYED_BACKWARDS
    event = _PLAYED_BACKWARDS.get(event, event)
    timing = _EVENT_TIMING[event]
    side = -1.0 if action.startswith("backhand") else 1.0
    # A volley is played nearer the net: where a frame is taken is a weak cue of its own.
    x0, d0 = rng.uniform(-0.3, 0.3), rng.uniform(*timing["depth"]) + (0.1 if backwards else 0.0)
    # Framing per video: player height (the scale jitter), feet row, left-right place, camera
    # height; the camera's court position follows from them.
    tall, feet, across, eye = (
        rng.uniform(0.44, 0.52),
        rng.uniform(0.86, 0.91),
        rng.uniform(0.44, 0.56),
        rng.uniform(0.18, 0.22),
    )
    f = 1.2
    distance = f * _PLAYER_H / tall
    cam = _Camera(
        f=f,
        cy=feet - f * eye / distance,
        x=x0 - (across - 0.5) * distance / f,
        d=d0 - distance,
        height=eye,
    )
    shake = max(1, round(s_img / 64))
    margin = 2 * shake + 1
    sport = cast.sport
    venue = cast.venues[rng.integers(len(cast.venues))]
    court = _court(cam, s_img, margin, venue, sport, rng)

    # Player: a slow sway around his spot, across more than in depth, where the rally player
    # steadily retreats to it (at most 0.3 court units over the video, from where he still looks
    # large).
    # Arrays cover the video plus the shots just before and after it (row = frame + pad).
    pad = 20
    rows_all = np.arange(length + 2 * pad + 20)
    sway = rng.uniform(0.01, 0.05), rng.uniform(0.005, 0.02)
    freq, phase = rng.uniform(0.05, 0.15, 2), rng.uniform(0, 7, 2)
    drift = min(_DRIFT * rng.uniform(0.6, 1), 0.3 / length) if event == "Rally" else 0.0
    px = x0 + sway[0] * np.sin(freq[0] * rows_all + phase[0])
    pd = (
        d0 + sway[1] * np.sin(freq[1] * rows_all + phase[1]) - drift * (rows_all - pad - length + 1)
    )
    size = cam.f * _PLAYER_H / (pd - cam.d)  # image fractions

    def limb(rows, angle, arm_side, reach, ahead):
        """World point `reach` player heights along an arm at `angle` degrees, `ahead` of him."""
        u, v = cam.project(px[rows], pd[rows], 0.0)
        rad = np.radians(angle)
        u = u + arm_side * (_SHOULDER[0] + reach * np.cos(rad)) * size[rows]
        v = v + (_SHOULDER[1] - lift[rows] - reach * np.sin(rad)) * size[rows]
        d = pd[rows] + ahead
        x, h = cam.unproject(u, v, d)
        return np.stack(np.broadcast_arrays(x, d, h), axis=-1)

    # Contacts every 12-16 frames, so any 16-frame window holds at least one.
    contacts = [pad - int(rng.integers(0, 16))]
    while contacts[-1] < length + 2 * pad:
        contacts.append(contacts[-1] + int(rng.integers(12, 17)))
    # Feet above the ground, in player heights: the smash is hit jumping (a scissor kick), a
    # whole-body motion that one frame cannot tell from a higher framing.
    lift = np.zeros(len(rows_all))
    if event == "Smash":
        k = np.arange(-3, 4)
        for c in contacts:
            lift[c + k] = rng.uniform(0.12, 0.2) * (1 - (k / 3.5) ** 2)
    # Per-video style: the swing's key poses turned a little; the contact and ready poses keep
    # one turn each, as they end one swing and start the next.
    after, before = sport.swing[event]
    shift = rng.uniform(-15, 15, len(after) + len(before) - 2)
    shift_before = [shift[len(after) - 1], *shift[len(after) :], shift[0]]
    after = [(k, a + d) for (k, a), d in zip(after, shift, strict=False)]
    before = [(k, a + d) for (k, a), d in zip(before, shift_before, strict=True)]
    racket_angle = np.zeros(len(rows_all))
    free_angle = np.zeros(len(rows_all))
    ball = np.full((len(rows_all), 3), np.nan)
    hit = limb(contacts[0], after[0][1], side, _ARM + _RACKET, 0.03)
    for c_from, c_to in zip(contacts[:-1], contacts[1:], strict=False):
        n = c_to - c_from
        n_out = int(rng.integers(timing["n_out"][0], timing["n_out"][1] + 1))
        n_in = min(int(rng.integers(timing["n_in"][0], timing["n_in"][1] + 1)), n - n_out - 1)
        tau = np.arange(n)
        rows = c_from + tau
        keys = after + [(n - k, a) for k, a in before]
        racket_angle[rows] = np.interp(tau, *zip(*keys, strict=True))
        nxt = limb(c_to, after[0][1], side, _ARM + _RACKET, 0.03)
        hand = lambda tau, angle, rows=rows: limb(rows[tau], angle, -side, _ARM, 0.01)  # noqa: E731
        path, free = sport.flight(event, cam, n, n_out, n_in, hit, nxt, hand, rng)
        free_angle[rows] = free
        if event == "Serve":
            # Until the toss, the ball rests in the tossing hand.
            hold = np.isnan(path[:, 0]) & (tau >= n_out)
            path[hold] = hand(hold, free[hold])
        ball[rows] = path
        hit = nxt
    keep = slice(pad + length - 1, pad - 1, -1) if backwards else slice(pad, pad + length)
    racket_angle, free_angle, ball = racket_angle[keep], free_angle[keep], ball[keep]
    px, pd, size, lift = px[keep], pd[keep], size[keep], lift[keep]

    # Channel-first (3, T, H, W): blends over a trailing axis of 3 are several times slower.
    canvas = np.broadcast_to(court[:, None], (3, length, *court.shape[1:])).copy()
    bu, bv = cam.project(ball[:, 0], ball[:, 1], ball[:, 2])
    visible = ~np.isnan(bu)
    bu, bv = np.nan_to_num(bu) * s_img + margin, np.nan_to_num(bv) * s_img + margin
    depth = np.where(visible, ball[:, 1], pd)
    # At least 3 px across (at 64 px) when far away.
    radius = np.maximum(
        1.5 * s_img / 64, sport.ball_r * cam.f * _PLAYER_H * s_img / (depth - cam.d)
    )
    behind = visible & (depth > pd + 0.02)
    _draw_ball(canvas, bu, bv, radius, behind, sport.ball)
    fu, fv = cam.project(px, pd, 0.0)
    colours = cast.players[rng.integers(_PLAYERS)]
    _draw_player(
        canvas,
        fu * s_img + margin,
        (fv - lift * size) * s_img + margin,
        size * s_img,
        side,
        racket_angle,
        free_angle,
        rng.uniform(0.1, 0.18),
        colours,
    )
    _draw_ball(canvas, bu, bv, radius, visible & ~behind, sport.ball)

    # Camera shake: each frame is cut from the canvas at a slightly different offset.
    dy, dx = rng.choice([-2, -1, 0, 1, 2], p=[0.05, 0.2, 0.5, 0.2, 0.05], size=(2, length))
    dy, dx = margin + dy * shake, margin + dx * shake
    frames = np.stack(
        [
            canvas[:, t, y : y + s_img, x : x + s_img]
            for t, (y, x) in enumerate(zip(dy, dx, strict=True))
        ],
        axis=1,
    )
    centre = np.stack([bu - dx, bv - dy], axis=1)
    if rng.random() < 0.5:
        frames = frames[..., ::-1]
        centre[:, 0] = s_img - centre[:, 0]
    centre[~visible | ((centre < 0) | (centre >= s_img)).any(axis=1)] = np.nan
    _occlude(frames, rng)
    gain = (rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, (3, 1, 1, 1))).astype(np.float32)
    flicker = 1 + 0.02 * rng.standard_normal((length, 1, 1), dtype=np.float32)
    frames = frames * (gain * flicker) + np.float32(rng.uniform(-10, 10))
    # Uniform pixel noise (std 2-7) from random bytes: a normal draw would double the run time.
    noise = np.frombuffer(rng.bytes(frames.size), np.int8).reshape(frames.shape)
    frames += noise * np.float32(rng.uniform(2, 7) / 74)
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames.transpose(1, 2, 3, 0)), centre


def _lerp(a, b, w):
    return a + (b - a) * w


def _arc(w, top):
    """A parabola over w in [0, 1], 0 at both ends and `top` in the middle."""
    return top * 4 * w * (1 - w)


def _phases(n: int, n_out: int, n_in: int):
    """Frames since a contact (n), the outgoing ones (mask, progress in [0, 1) as a column)
    and the incoming ones before the next contact (mask, progress in [0, 1))."""
    tau = np.arange(n)
    out = tau < n_out
    inc = n - tau <= n_in
    return tau, out, (tau[out] / n_out)[:, None], inc, (1 - (n - tau[inc]) / n_in)[:, None]


def _ball_path(event, cam, n, n_out, n_in, hit, nxt, hand, rng):
    """World positions (n, 3) of the ball from one contact to the frame before the next (NaN
    while out of play) and the free arm's angle over those frames; `hand(tau, angle)` is where
    the free hand is tau frames after the contact."""
    tau, out, s, inc, r = _phases(n, n_out, n_in)
    path = np.full((n, 3), np.nan)
    lerp, arc = _lerp, _arc
    x, d, h = nxt
    if event == "Serve":
        # Out: fast and flat into the far service box.
        target = np.array([hit[0] + rng.uniform(-0.25, 0.25), rng.uniform(1.3, 1.55), 0.0])
        path[out] = lerp(hit, target, s)
        # In: the toss rises from the hand, hangs at the top, falls onto the racket.
        apex_at = rng.uniform(0.45, 0.6)
        start = hand(n - n_in, -80.0)
        apex_h = h + _PLAYER_H * rng.uniform(0.15, 0.35)
        w = r[:, 0]
        rise = apex_h - (apex_h - start[2]) * (1 - w / apex_at) ** 2
        fall = apex_h - (apex_h - h) * ((w - apex_at) / (1 - apex_at)) ** 2
        path[inc] = lerp(start, nxt, np.minimum(w / apex_at, 1)[:, None])
        path[inc, 2] = np.where(w < apex_at, rise, fall)
        # Tossing arm: down holding the ball, up with the toss, down after the hit.
        free = np.interp(
            tau, [0, n_out, n - n_in, n - n_in * (1 - apex_at), n], [60, -70, -80, 85, 60]
        )
    elif event == "Smash":
        # Out: driven down steeply into the far court.
        target = np.array([hit[0] + rng.uniform(-0.3, 0.3), hit[1] + rng.uniform(0.5, 0.9), 0.0])
        path[out] = lerp(hit, target, s)
        # In: a lob that drops steeply from the top of the image onto the racket, in sight all
        # the way: entering from above the image, it showed too little to tell from a toss.
        z = d + rng.uniform(0.3, 0.7)
        start = np.array([x + rng.uniform(-0.1, 0.1), z, 0.0])
        start[2] = cam.height + (cam.cy - rng.uniform(0.02, 0.1)) * (z - cam.d) / cam.f
        fall = 0.35 * r + 0.65 * r**2
        path[inc] = lerp(start, nxt, r)
        path[inc, 2] = lerp(start[2], h, fall[:, 0])
        # Free arm points up at the lob.
        free = np.interp(tau, [0, 3, n - n_in, n], [60, -60, 70, 60])
    else:  # Rally
        # Out: a long arc back over the net.
        target = np.array(
            [hit[0] + rng.uniform(-0.35, 0.35), rng.uniform(1.6, 2.0), rng.uniform(0.08, 0.14)]
        )
        path[out] = lerp(hit, target, s)
        path[out, 2] += arc(s[:, 0], rng.uniform(0.05, 0.12))
        # In: comes over the net, bounces in front of the player (a V in height), rises to him.
        start = np.array(
            [x + rng.uniform(-0.35, 0.35), rng.uniform(1.5, 1.9), rng.uniform(0.1, 0.16)]
        )
        at = rng.uniform(0.5, 0.65)
        bounce = np.array([lerp(start[0], x, at), d + rng.uniform(0.25, 0.5), 0.0])
        w1 = np.clip(r / at, 0, 1)
        w2 = np.clip((r - at) / (1 - at), 0, 1)
        first = lerp(start, bounce, w1)
        first[:, 2] += arc(w1[:, 0], rng.uniform(0.02, 0.06))
        second = lerp(bounce, nxt, w2)
        second[:, 2] += arc(w2[:, 0], rng.uniform(0.02, 0.05))
        path[inc] = np.where(r < at, first, second)
        # Free arm pointing at the coming ball, as coaches teach (an arm up is not overhead-only),
        # then swung across with the stroke.
        free = np.interp(tau, [0, 4, n - n_in, n - 2, n], [-160, -120, 45, 20, -160])
    return path, free


def _shuttle_path(event, cam, n, n_out, n_in, hit, nxt, hand, rng):
    """As `_ball_path`, for a shuttle: it leaves fast and slows (drag), falls at a steady speed
    at the end of a high shot, and never bounces."""
    tau, out, s, inc, r = _phases(n, n_out, n_in)
    path = np.full((n, 3), np.nan)
    slowing = 1 - (1 - s) ** 2.5  # share of the outgoing flight covered
    x, d, h = nxt
    if event == "Serve":
        # Out: a high serve, rising steeply towards the far back line.
        target = np.array([hit[0] + rng.uniform(-0.2, 0.2), rng.uniform(1.6, 1.9), h + 0.5])
        path[out] = _lerp(hit, target, slowing)
        path[out, 2] += _arc(slowing[:, 0], rng.uniform(0.05, 0.15))
        # In: held out in front until dropped, then falling onto the racket low in front.
        drop = rng.uniform(0.45, 0.6)
        start = hand(n - n_in, -20.0)
        falling = r[:, 0] >= drop
        w = ((r[falling] - drop) / (1 - drop)) ** 2
        path[np.flatnonzero(inc)[falling]] = _lerp(start, nxt, w)
        # Free arm: down after the hit, out in front holding the shuttle, down once it is let go.
        free = np.interp(
            tau, [0, n_out, n - n_in, n - n_in * (1 - drop), n], [-70, -70, -20, -20, -70]
        )
        return path, free
    if event == "Smash":
        # Out: straight down into the far court, fast.
        target = np.array([hit[0] + rng.uniform(-0.3, 0.3), hit[1] + rng.uniform(0.4, 0.7), 0.0])
        path[out] = _lerp(hit, target, 1 - (1 - s) ** 1.5)
        z = d + rng.uniform(0.2, 0.5)
    else:  # Rally: a clear, out high over the far court
        target = np.array([hit[0] + rng.uniform(-0.3, 0.3), rng.uniform(1.7, 2.0), h + 0.7])
        path[out] = _lerp(hit, target, slowing)
        path[out, 2] += _arc(slowing[:, 0], rng.uniform(0.05, 0.1))
        z = d + rng.uniform(0.5, 0.9)
    # In: a high shot from the far side, falling from the top of the image at a steady speed as
    # its way across slows.
    start = np.array([x + rng.uniform(-0.15, 0.15), z, 0.0])
    start[2] = cam.height + (cam.cy - rng.uniform(0.02, 0.1)) * (z - cam.d) / cam.f
    path[inc] = _lerp(start, nxt, 1 - (1 - r) ** 2)
    path[inc, 2] = _lerp(start[2], h, r[:, 0])
    # Free arm points up at the shuttle.
    free = np.interp(tau, [0, 3, n - n_in, n], [60, -60, 70, 60])
    return path, free


class _Sport(NamedTuple):
    actions: dict[str, str]  # the action folders the trainer reads, and their events
    looks_like: dict[str, str]  # every folder written (excluded ones too): the event it shows
    venues: list  # (court, surround, back wall) RGB
    lines: _Lines
    swing: dict
    flight: Any  # _ball_path or _shuttle_path
    ball: tuple  # RGB
    ball_r: float  # in player heights


_SPORTS = {
    "tennis": _Sport(
        THETIS_ACTIONS,
        # Excluded actions still look like the event they resemble: only the folder name
        # excludes them.
        {**THETIS_ACTIONS, **dict(zip(THETIS_EXCLUDED, ["Rally", "Serve", "Serve"], strict=True))},
        _COURTS,
        _TENNIS_COURT,
        _SWING,
        _ball_path,
        _BALL,
        _BALL_R,
    ),
    "badminton": _Sport(
        BADMINTON_ACTIONS,
        BADMINTON_ACTIONS,
        _HALLS,
        _BADMINTON_COURT,
        _BADMINTON_SWING,
        _shuttle_path,
        _SHUTTLE,
        _SHUTTLE_R,
    ),
}


def _court(
    cam: _Camera, s_img: int, margin: int, venue: tuple, sport: _Sport, rng: np.random.Generator
) -> np.ndarray:
    """Background (3, C, C) float32: court, lines, net and back wall, with lighting gradient."""
    court, surround, wall = venue
    half_width, singles, service, net_h = sport.lines
    size = s_img + 2 * margin
    pix = (np.arange(size, dtype=np.float32) - margin + 0.5) / s_img
    u, v = pix[None, :], pix[:, None]
    below = np.maximum(v - cam.cy, 1e-3)
    z = cam.f * cam.height / below
    d = z + cam.d
    x = cam.x + (u - 0.5) * z / cam.f
    wall_v = cam.project(0.0, 2.6, 0.0)[1]
    inside = (np.abs(x) <= half_width) & (d >= 0) & (d <= 2)
    image = np.where(inside[..., None], court, surround)
    image = np.where((v < wall_v)[..., None], wall, image)
    # Lines: distance to each line converted to pixels at that depth, anti-aliased.
    px_per_d = cam.f * cam.height * s_img / z**2
    px_per_x = cam.f * s_img / z
    width = 0.3
    alpha = np.zeros((size, size), np.float32)
    for d_line, half in [
        (0, half_width),
        (2, half_width),
        (1 - service, singles),
        (1 + service, singles),
    ]:
        near = np.clip(width + 0.5 - np.abs(d - d_line) * px_per_d, 0, 1)
        alpha = np.maximum(alpha, near * (np.abs(x) <= half))
    for x_line, (d_lo, d_hi) in [
        (-half_width, (0, 2)),
        (half_width, (0, 2)),
        (-singles, (0, 2)),
        (singles, (0, 2)),
        (0, (1 - service, 1 + service)),
    ]:
        near = np.clip(width + 0.5 - np.abs(x - x_line) * px_per_x, 0, 1)
        alpha = np.maximum(alpha, near * ((d >= d_lo) & (d <= d_hi)))
    alpha *= v > wall_v
    image += alpha[..., None] * (np.float32(235) - image)
    # Net: a dark see-through band across the court with a white tape on top.
    net_top, net_bottom = cam.project(0.0, 1.0, net_h)[1], cam.project(0.0, 1.0, 0.0)[1]
    span = np.abs(cam.unproject(u, v, 1.0)[0]) <= half_width + 0.08
    band = np.clip(np.minimum(v - net_top, net_bottom - v) * s_img + 0.5, 0, 1) * span
    image += 0.6 * band[..., None] * (np.float32(25) - image)
    tape = np.clip(1 - np.abs(v - net_top) * s_img, 0, 1) * span
    image += 0.8 * tape[..., None] * (np.float32(240) - image)
    # Stray ball lying on the court: the yellow disc alone does not locate the ball in play.
    if rng.random() < 0.25:
        spot = rng.uniform(-0.6, 0.6), rng.uniform(cam.d + 0.4, 1.9)
        su, sv = cam.project(*spot, 0.0)
        r = np.hypot((u - su) * s_img, (v - sv) * s_img)
        disc = np.clip(sport.ball_r * cam.f * _PLAYER_H * s_img / (spot[1] - cam.d) + 0.5 - r, 0, 1)
        image += disc[..., None] * (np.array(sport.ball, np.float32) - image)
    # Sun and shade: a random linear lighting gradient.
    slope = rng.uniform(-0.25, 0.25, 2)
    image *= (1 + slope[0] * (u - 0.5) + slope[1] * (v - 0.5))[..., None]
    return np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)


def _draw_ball(canvas, cu, cv, radius, mask, colour) -> None:
    """Draw an anti-aliased disc per frame (where `mask`) through small per-frame patches."""
    if not mask.any():
        return
    frames = np.flatnonzero(mask)
    size = 2 * int(np.ceil(radius.max())) + 3
    limit = canvas.shape[2] - size
    top = np.clip(np.floor(cv[frames]).astype(int) - size // 2, 0, limit)
    left = np.clip(np.floor(cu[frames]).astype(int) - size // 2, 0, limit)
    grid = np.arange(size)
    rows = (top[:, None] + grid)[:, :, None]
    cols = (left[:, None] + grid)[:, None, :]
    dist = np.hypot(rows + 0.5 - cv[frames, None, None], cols + 0.5 - cu[frames, None, None])
    alpha = np.clip(radius[frames, None, None] + 0.5 - dist, 0, 1)
    index = (slice(None), frames[:, None, None], rows, cols)
    patch = canvas[index]
    canvas[index] = patch + alpha * (np.array(colour, np.float32)[:, None, None, None] - patch)


def _draw_player(canvas, fu, fv, size, side, racket_angle, free_angle, stance, colours) -> None:
    """Draw the player seen from behind, feet at (fu, fv) px, `size` px tall, per frame."""
    length, extent = canvas.shape[1], canvas.shape[2]
    # A patch per frame that holds the figure with the racket anywhere around it.
    height = min(int(np.ceil(1.7 * size.max())) + 4, extent)
    width = min(int(np.ceil(1.95 * size.max())) + 4, extent)
    top = np.clip(np.round(fv - 1.6 * size).astype(int), 0, extent - height)
    left = np.clip(np.round(fu - width / 2).astype(int), 0, extent - width)
    index = (
        slice(None),
        np.arange(length)[:, None, None],
        (top[:, None] + np.arange(height))[:, :, None],
        (left[:, None] + np.arange(width))[:, None, :],
    )
    # Fancy indexing leaves the channel axis innermost; contiguous channels blend much faster.
    patch = np.ascontiguousarray(canvas[index])

    def per_frame(values):
        return np.asarray(values, np.float32)[:, None, None]

    # Patch coordinates in player heights, origin at the feet, y down; float32 keeps it fast.
    h = per_frame(size)
    x = (np.arange(width, dtype=np.float32) + 0.5 + per_frame(left - fu)) / h
    y = (np.arange(height, dtype=np.float32)[:, None] + 0.5 + per_frame(top - fv)) / h
    feet_row, feet_col = fv - top, fu - left

    def span(low, high, feet, limit):
        """Patch pixels covering player coordinates [low, high] in every frame."""
        first = int(np.floor(np.min(feet + low * size))) - 1
        last = int(np.ceil(np.max(feet + high * size))) + 2
        return slice(min(max(first, 0), limit), min(max(last, 0), limit))

    def draw(rows, cols, layers):
        """Paint (shape, colour) layers, shape(x, y) -> alpha, in one region of the patch: fixed
        slices, or per-frame pixel boxes (T, n) for a part that moves around the player."""
        if isinstance(rows, slice):
            xs, ys = x[:, :, cols], y[:, rows, :]
            where = (slice(None), slice(None), rows, cols)
        else:
            xs = np.take_along_axis(x, cols[:, None, :], axis=2)
            ys = np.take_along_axis(y, rows[:, :, None], axis=1)
            where = (slice(None), index[1], rows[:, :, None], cols[:, None, :])
        part = np.ascontiguousarray(patch[where])
        for shape, colour in layers:
            part += shape(xs, ys) * (np.array(colour, np.float32)[:, None, None, None] - part)
        patch[where] = part

    def segment(ax, ay, bx, by, half):
        def alpha(x, y):
            dx, dy = bx - ax, by - ay
            w = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
            return np.clip((half - np.hypot(x - ax - w * dx, y - ay - w * dy)) * h + 0.5, 0, 1)

        return alpha

    def ellipse(cx, cy, rx, ry, cos=1.0, sin=0.0):
        def alpha(x, y):
            a, b = ((x - cx) * cos + (y - cy) * sin) / rx, ((y - cy) * cos - (x - cx) * sin) / ry
            return np.clip((1 - np.hypot(a, b)) * min(rx, ry) * h + 0.5, 0, 1)

        return alpha

    def shorts(x, y):
        return np.clip(0.5 - np.maximum(np.abs(x) - 0.15, np.abs(y + 0.5) - 0.08) * h, 0, 1)

    legs = tuple(0.85 * np.array(colours["skin"]))
    body = (span(-1.01, 0.06, feet_row, height), span(-0.25, 0.25, feet_col, width))
    draw(
        *body,
        [
            (segment(-0.08, -0.46, -stance, 0.0, 0.045), legs),
            (segment(0.08, -0.46, stance, 0.0, 0.045), legs),
            (shorts, colours["shorts"]),
            (ellipse(0.0, -0.68, 0.16, 0.17), colours["shirt"]),
            (ellipse(0.0, -0.91, 0.085, 0.085), colours["hair"]),
        ],
    )
    sx, sy = _SHOULDER
    free = np.radians(per_frame(free_angle))
    rad = np.radians(per_frame(racket_angle))
    cos, sin = side * np.cos(rad), -np.sin(rad)
    hand_x, hand_y = side * sx + _ARM * cos, sy + _ARM * sin
    arms = (span(-1.12, -0.44, feet_row, height), span(-0.49, 0.49, feet_col, width))
    draw(
        *arms,
        [
            (
                segment(
                    -side * sx,
                    sy,
                    -side * (sx + _ARM * np.cos(free)),
                    sy - _ARM * np.sin(free),
                    0.03,
                ),
                colours["skin"],
            ),
            (segment(side * sx, sy, hand_x, hand_y, 0.03), colours["skin"]),
        ],
    )
    # Racket: shaft and head (a coloured frame around light strings, the same make for every
    # player), drawn in a small box that follows it.
    reach = _ARM + _RACKET
    head_x, head_y = side * sx + reach * cos, sy + reach * sin
    box = int(np.ceil(0.52 * size.max())) + 3
    mid_x, mid_y = (side * sx + 0.53 * cos)[:, 0, 0], (sy + 0.53 * sin)[:, 0, 0]
    rows = np.clip(np.round(feet_row + mid_y * size - box / 2).astype(int), 0, height - box)
    cols = np.clip(np.round(feet_col + mid_x * size - box / 2).astype(int), 0, width - box)
    draw(
        rows[:, None] + np.arange(box),
        cols[:, None] + np.arange(box),
        [
            (
                segment(hand_x, hand_y, hand_x + 0.18 * cos, hand_y + 0.18 * sin, 0.018),
                (20, 20, 20),
            ),
            (ellipse(head_x, head_y, 0.14, 0.095, cos, sin), colours["racket"]),
            (ellipse(head_x, head_y, 0.1, 0.06, cos, sin), (215, 215, 205)),
        ],
    )
    canvas[index] = patch


def _occlude(frames: np.ndarray, rng: np.random.Generator) -> None:
    """Random opaque rectangles (a passer-by, a flag) over the image for a few frames."""
    length, s_img = frames.shape[1], frames.shape[2]
    # At most one, mid-sized: more and larger ones hid the ball for much of a short clip.
    for _ in range(int(rng.choice([0, 0, 0, 1]))):
        start = int(rng.integers(length))
        stop = start + int(rng.integers(2, 6))
        h, w = (rng.uniform(0.15, 0.3, 2) * s_img).astype(int)
        top, left = int(rng.integers(s_img - h)), int(rng.integers(s_img - w))
        colour = np.array(_CLOTHES[rng.integers(len(_CLOTHES))], np.float32)
        frames[:, start:stop, top : top + h, left : left + w] = colour[:, None, None, None]
