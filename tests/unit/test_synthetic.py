"""The synthetic twin: layout, exact window counts, determinism, regeneration and its lock, motion
signal, order signal."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tennis_exp import files
from tennis_exp.config import (
    BADMINTON_ACTIONS,
    EVENTS,
    IDLE_ACTION,
    THETIS_ACTIONS,
    THETIS_EXCLUDED,
)
from tennis_exp.data.synthetic import ensure_synthetic
from tennis_exp.errors import UserError
from tennis_exp.files import locked
from tennis_exp.synthetic import generate
from tennis_exp.synthetic.camera import Camera
from tennis_exp.synthetic.cast import cast_of
from tennis_exp.synthetic.clip import render_clip, render_idle, render_video
from tennis_exp.synthetic.plan import expected_windows, idle_windows, plan
from tennis_exp.synthetic.sports import SPORTS as SPORT_TABLE

SPLITS = ("train", "val", "test")
STRIDES = {"train": 8, "val": 16, "test": 16}
SPORTS = ("tennis", "badminton")
SIZE = 32  # small images keep the file fast; rendering scales with the image size


def windows(length: int, stride: int) -> int:
    return (length - 16) // stride + 1 if length >= 16 else 0


def video_lengths(root: Path) -> dict[str, dict[str, list[int]]]:
    """split -> action folder -> frame count of each video, read from the files."""
    return {
        split: {
            action.name: [len(list(video.glob("*.jpg"))) for video in sorted(action.iterdir())]
            for action in sorted((root / split).iterdir())
        }
        for split in SPLITS
    }


def count_windows(lengths: dict[str, dict[str, list[int]]]) -> dict[str, dict[str, int]]:
    """The loader's rule: mapped actions only, window 16, stride 8 on train and 16 otherwise."""
    counts = {split: dict.fromkeys(EVENTS, 0) for split in SPLITS}
    for split, actions in lengths.items():
        for action, videos in actions.items():
            if action in THETIS_ACTIONS:
                counts[split][THETIS_ACTIONS[action]] += sum(
                    windows(n, STRIDES[split]) for n in videos
                )
    return counts


def digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.jpg"))
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    assert ensure_synthetic(root, "tiny", seed=0, image_size=SIZE)
    return root


def test_layout(tiny: Path):
    for split in SPLITS:
        assert {p.name for p in (tiny / split).iterdir()} == set(THETIS_ACTIONS) | set(
            THETIS_EXCLUDED
        )
        for video in (tiny / split).glob("*/*"):
            assert re.fullmatch(rf"p\d{{4}}_{video.parent.name}", video.name)
            names = sorted(p.name for p in video.iterdir())
            assert names == [f"frame_{t:04d}.jpg" for t in range(1, len(names) + 1)]
    frame = next(tiny.glob("train/smash/*/frame_0001.jpg"))
    with Image.open(frame) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
    marker = json.loads((tiny / ".synthetic.json").read_text())
    assert marker["preset"] == "tiny" and marker["seed"] == 0 and marker["image_size"] == SIZE
    # The temporary directory was renamed into place, nothing is left beside the root.
    assert [p.name for p in tiny.parent.iterdir() if not p.name.endswith(".lock")] == ["data"]


def test_window_counts_from_files_match_expected(tiny: Path):
    lengths = video_lengths(tiny)
    expected = expected_windows("tiny")
    assert count_windows(lengths) == expected
    for split in SPLITS:
        assert all(expected[split][event] > 0 for event in EVENTS)
        # Every action folder holds at least one video that yields windows.
        assert all(any(n >= 16 for n in lengths[split][a]) for a in THETIS_ACTIONS)
        # Excluded folders and too-short videos exist, so the loader's skipping is exercised.
        assert all(any(n >= 16 for n in lengths[split][a]) for a in THETIS_EXCLUDED)
        assert any(n < 16 for a in THETIS_ACTIONS for n in lengths[split][a])


def test_tiny_sizes():
    totals = {split: sum(c.values()) for split, c in expected_windows("tiny").items()}
    assert 60 <= totals["train"] <= 100
    assert 16 <= totals["val"] <= 30 and 16 <= totals["test"] <= 30


def test_full_plan_has_the_real_window_counts():
    expected = expected_windows("full")
    assert {split: sum(c.values()) for split, c in expected.items()} == {
        "train": 7775,
        "val": 882,
        "test": 952,
    }
    assert expected["train"] == {"Smash": 839, "Net Play": 1597, "Rally": 4344, "Serve": 995}
    for preset in ("full", "small", "tiny"):
        planned = plan(preset)
        lengths = {split: {} for split in SPLITS}
        for split, videos in planned.items():
            for video in videos:
                lengths[split].setdefault(video.action, []).append(video.length)
            assert len({video.name for video in videos}) == len(videos)
            assert set(lengths[split]) == set(THETIS_ACTIONS) | set(THETIS_EXCLUDED)
        assert count_windows(lengths) == expected_windows(preset)


def test_small_preset_size_and_priors():
    small, full = expected_windows("small"), expected_windows("full")
    totals = {split: sum(c.values()) for split, c in small.items()}
    assert 1000 <= totals["train"] <= 1400
    assert 200 <= totals["val"] <= 250 and 200 <= totals["test"] <= 250
    # Spread over many short videos: from a few long ones a small CNN learns each video's look.
    assert len(plan("small")["train"]) >= totals["train"] // 2
    for split in SPLITS:
        for event in EVENTS:
            prior = full[split][event] / sum(full[split].values())
            assert small[split][event] / totals[split] == pytest.approx(prior, abs=0.01)


def test_deterministic_by_seed(tiny: Path, tmp_path: Path, monkeypatch):
    # Through the process pool this time (where there are cores): the same bytes as the fixture's
    # serial run, so neither the order of videos nor the worker matters.
    monkeypatch.setattr(generate, "POOL_MIN_FRAMES", 0)
    assert ensure_synthetic(tmp_path / "same", "tiny", seed=0, image_size=SIZE)
    first = digest(tiny)
    assert digest(tmp_path / "same") == first
    # Another seed renders the same plan differently; a few videos show it.
    for index, video in enumerate(plan("tiny")["val"][:5]):
        (tmp_path / "other" / video.action).mkdir(parents=True, exist_ok=True)
        generate.write_video((tmp_path / "other", 1, index, video, 1, SIZE, "tennis"))
    other = digest(tmp_path / "other")
    assert len(other) > 50
    assert all(value != first[f"val/{name}"] for name, value in other.items())


def test_ensure_skips_same_settings_and_regenerates_changed(tiny: Path, tmp_path: Path):
    root = Path(shutil.copytree(tiny, tmp_path / "data"))
    (root / "notes.txt").write_text("not ours")
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert not ensure_synthetic(root, "tiny", seed=0, image_size=SIZE)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes

    assert ensure_synthetic(root, "tiny", seed=0, image_size=SIZE - 8)
    with Image.open(next(root.glob("val/*/*/frame_0001.jpg"))) as image:
        assert image.size == (SIZE - 8, SIZE - 8)
    assert json.loads((root / ".synthetic.json").read_text())["image_size"] == SIZE - 8
    assert (root / "notes.txt").read_text() == "not ours"  # only splits and marker are replaced
    assert not ensure_synthetic(root, "tiny", seed=0, image_size=SIZE - 8)


def test_interrupted_generation_keeps_the_old_dataset(tiny: Path, tmp_path: Path, monkeypatch):
    root = Path(shutil.copytree(tiny, tmp_path / "data"))

    def crash(task):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "write_video", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(root, "tiny", seed=1, image_size=SIZE)
    assert digest(root) == digest(tiny)
    assert json.loads((root / ".synthetic.json").read_text())["seed"] == 0
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["data"]
    # A fresh root that fails is not created at all.
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path / "fresh", "tiny", seed=0, image_size=SIZE)
    assert not (tmp_path / "fresh").exists()


def test_the_dataset_lock_is_held_by_one_and_absent_without_fcntl(tmp_path: Path, monkeypatch):
    """The lock that ensure_synthetic waits on (and prepare and the GPU pool use): a second
    holder that does not wait is told so; released, it is free again. Without fcntl (Windows)
    there are no locks, and every holder goes on."""
    lock = tmp_path / ".data.synthetic.lock"
    with locked(lock) as first, locked(lock, wait=False) as second:
        assert (first, second) == (True, False)
    with locked(lock, wait=False) as again:
        assert again
    monkeypatch.setattr(files, "fcntl", None)
    with locked(lock) as first, locked(lock, wait=False) as second:
        assert (first, second) == (True, True)


def test_split_folders_without_marker_are_not_replaced(tmp_path: Path):
    real = tmp_path / "data" / "train" / "smash" / "p1_smash_s1"
    real.mkdir(parents=True)
    (real / "frame_0001.jpg").write_bytes(b"real")
    with pytest.raises(UserError, match="real data"):
        ensure_synthetic(tmp_path / "data", "tiny", seed=0, image_size=SIZE)
    assert (real / "frame_0001.jpg").read_bytes() == b"real"


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset"):
        expected_windows("huge")


def test_motion_separates_events_single_frames_do_not():
    """The event is in how the ball moves, not in any one frame.

    Nearest-centroid classification of held-out videos: on a 16-frame window's ball-motion
    statistics it must be accurate; on one frame's statistics (mean colour and ball position)
    it must stay far lower. The ball track is checked against the pixels first.
    """
    actions = {e: [a for a, v in THETIS_ACTIONS.items() if v == e] for e in EVENTS}
    motion, still, labels, fold = [], [], [], []
    yellow = []
    for label, event in enumerate(EVENTS):
        for k in range(10):
            rng = np.random.default_rng([7, label, k])
            frames, ball = render_video(
                event, actions[event][k % len(actions[event])], 40, 64, rng, cast_of(0)
            )
            for t in np.flatnonzero(~np.isnan(ball[:, 0])):
                x, y = ball[t].astype(int)
                rgb = frames[t, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].astype(int)
                yellow.append((np.minimum(rgb[..., 0], rgb[..., 1]) - rgb[..., 2]).max() > 90)
            for start in range(0, 40 - 16 + 1, 8):
                track = ball[start : start + 16]
                motion.append(_motion_features(track))
                position = track[7] if not np.isnan(track[7, 0]) else (-20.0, -20.0)
                still.append([*frames[start + 7].reshape(-1, 3).mean(axis=0), *position])
                labels.append(label)
                fold.append(k % 2)
    # Where the track says the ball is, the image shows a ball, unless the player, his racket
    # or an occluder is in front of it (about a quarter of the frames).
    assert np.mean(yellow) > 0.6
    motion_accuracy = _nearest_centroid(np.array(motion), np.array(labels), np.array(fold))
    still_accuracy = _nearest_centroid(np.array(still), np.array(labels), np.array(fold))
    assert motion_accuracy > 0.8
    assert still_accuracy < 0.55
    assert motion_accuracy - still_accuracy > 0.3


def _motion_features(track: np.ndarray) -> list[float]:
    """Phase-free statistics of a ball track (T, 2) in pixels, NaN where out of play, and where
    in its longest flight the ball is lowest on screen: a rally ball bounces early in it, before
    the racket meets it, a volley late, after."""
    seen = ~np.isnan(track[:, 0])
    step = np.diff(track, axis=0)[seen[1:] & seen[:-1]]
    if len(step) == 0:
        step = np.zeros((1, 2))
    moving = np.sign(step[np.abs(step[:, 1]) > 0.7, 1])
    longest = max(_flights(track, whole=False), key=len, default=np.zeros(2))
    return [
        seen.mean(),
        np.mean(step[:, 1] < -0.7),  # rising on screen
        np.mean(step[:, 1] > 0.7),  # falling on screen
        np.abs(step[:, 1]).max(),
        np.abs(step[:, 0]).mean(),
        np.count_nonzero(np.diff(moving)),  # turns: toss apex, bounce, hit
        np.nanmin(track[:, 1]) if seen.any() else 64.0,  # highest point on screen
        np.argmax(longest) / (len(longest) - 1),
    ]


def _flights(track: np.ndarray, whole: bool = True) -> list[np.ndarray]:
    """The screen heights (pixel rows) of the ball over each run of frames with it in sight, at
    least 2 frames long; `whole`: only runs that the track's ends do not cut."""
    seen = ~np.isnan(track[:, 1])
    edges = np.flatnonzero(np.diff(np.r_[0, seen.astype(int), 0]))
    return [
        track[a:b, 1]
        for a, b in zip(edges[::2], edges[1::2], strict=True)
        if b - a >= 2 and (not whole or (a > 0 and b < len(track)))
    ]


def test_a_volley_is_a_rally_stroke_played_backwards():
    """Net Play shows Rally's frames in the reverse order, a little nearer the net: their order
    tells them apart, where a frame is taken only weakly.

    From the same random stream, a volley clip's ball is where the rally clip's is, frame for
    frame backwards (up to the camera shake, drawn in playing order, and the volley's spot 0.1
    nearer the net). The order differs: the ball is lowest on screen, bouncing, early in a rally
    flight, before the racket meets it, and late in a volley's.
    """
    bounce_at = {"Rally": [], "Net Play": []}
    for k in range(12):
        clips = {
            event: render_video(
                event, "forehand_flat", 48, 64, np.random.default_rng([5, k]), cast_of(0)
            )
            for event in bounce_at
        }
        rally_ball, volley_ball = clips["Rally"][1], clips["Net Play"][1]
        both = ~np.isnan(volley_ball[:, 0]) & ~np.isnan(rally_ball[::-1, 0])
        # The ball can leave the image in one clip and not the other only at its edges.
        assert np.mean(both) > 0.9 * np.mean(~np.isnan(volley_ball[:, 0]))
        assert np.abs(volley_ball[both] - rally_ball[::-1][both]).max() <= 6
        for event, (_, ball) in clips.items():
            bounce_at[event] += [np.argmax(f) / (len(f) - 1) for f in _flights(ball) if len(f) > 4]
    assert np.mean(bounce_at["Rally"]) < 0.45 < 0.55 < np.mean(bounce_at["Net Play"])


def _nearest_centroid(x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> float:
    """Train on fold 0, test on fold 1 (different videos), standardised features."""
    mean, std = x[fold == 0].mean(axis=0), x[fold == 0].std(axis=0) + 1e-6
    x = (x - mean) / std
    centroids = np.stack([x[(fold == 0) & (y == c)].mean(axis=0) for c in range(len(EVENTS))])
    test = fold == 1
    guess = np.argmin(((x[test, None] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    return float(np.mean(guess == y[test]))


def test_the_badminton_twin_has_the_users_stroke_folders_and_counts(tmp_path: Path):
    root = tmp_path / "badminton"
    assert ensure_synthetic(root, "tiny", seed=0, image_size=SIZE, sport="badminton")
    lengths = video_lengths(root)
    for split in SPLITS:
        assert set(lengths[split]) <= set(BADMINTON_ACTIONS)  # nothing excluded, no THETIS name
        counts = dict.fromkeys(EVENTS, 0)
        for action, videos in lengths[split].items():
            counts[BADMINTON_ACTIONS[action]] += sum(windows(n, STRIDES[split]) for n in videos)
        assert counts == expected_windows("tiny")[split]
    marker = json.loads((root / ".synthetic.json").read_text())
    assert marker["sport"] == "badminton"
    # The same settings but the other sport is another dataset.
    assert ensure_synthetic(root, "tiny", seed=0, image_size=SIZE, sport="tennis")
    assert set(video_lengths(root)["train"]) <= set(THETIS_ACTIONS) | set(THETIS_EXCLUDED)


def test_the_badminton_mapping_is_data_badmintons():
    conf = Path(__file__).parents[2] / "conf" / "data" / "badminton.yaml"
    assert yaml.safe_load(conf.read_text())["actions"] == BADMINTON_ACTIONS


def _incoming_heights(sport: str, event: str, seed: int) -> np.ndarray:
    """The ball's height over the frames before a contact, from the sport's flight model, with
    the hand and racket where a player 0.28 tall holds them (shoulder at 0.22)."""
    cam = Camera(f=1.2, cy=0.6, x=0.0, d=-0.5, height=0.2)
    table = SPORT_TABLE[sport]
    contact = np.radians(table.swing[event][0][0][1])  # the racket's angle at the hit
    hit = nxt = np.array([0.05, 0.2, 0.22 + 0.17 * np.sin(contact)])

    def hand(tau, angle):  # the free hand, at the end of an arm 0.084 long
        spot = np.array([-0.05, 0.21, 0.22 + 0.084 * np.sin(np.radians(angle))])
        return spot if np.ndim(tau) == 0 else np.tile(spot, (np.count_nonzero(tau), 1))

    path, _ = table.flight(event, cam, 14, 4, 9, hit, nxt, hand, np.random.default_rng(seed))
    heights = path[-9:, 2]
    return heights[~np.isnan(heights)]


@pytest.mark.parametrize("seed", range(5))
def test_a_shuttle_never_bounces_and_a_badminton_serve_is_dropped_not_tossed(seed):
    tennis_rally, shuttle_rally = (_incoming_heights(s, "Rally", seed) for s in SPORTS)
    tennis_serve, shuttle_serve = (_incoming_heights(s, "Serve", seed) for s in SPORTS)
    low = np.argmin(tennis_rally)  # bounces on the court: falls, then rises to the racket
    assert 0 < low < len(tennis_rally) - 1 and tennis_rally[-1] > tennis_rally[low] + 0.05
    assert tennis_serve.max() > tennis_serve[0] + 0.02  # the toss rises from the hand
    for heights in (shuttle_rally, shuttle_serve):
        assert np.all(np.diff(heights) <= 1e-9) and heights.min() > 0  # only falls


# ---------------------------------------------------------------------------------------------
# The twin with idle clips (data.background).


@pytest.mark.parametrize("preset", ["tiny", "small", "full"])
def test_background_adds_idle_clips_and_leaves_the_event_clips_as_they_were(preset):
    without, with_idle = plan(preset), plan(preset, background=True)
    idle = idle_windows(preset)
    for split in SPLITS:
        assert with_idle[split][: len(without[split])] == without[split]
        added = with_idle[split][len(without[split]) :]
        assert added and {v.action for v in added} == {IDLE_ACTION}
        assert sum(windows(v.length, STRIDES[split]) for v in added) == idle[split]
        events = expected_windows(preset)[split]
        assert min(events.values()) <= idle[split] <= max(events.values())


def test_an_idle_clip_holds_the_scene_an_event_clip_moves():
    video = plan("tiny", background=True)["train"][-1]
    frames = render_idle(video, 0, 0, 0, SIZE).astype(np.float32)
    assert frames.shape == (video.length, SIZE, SIZE, 3)
    assert np.array_equal(render_idle(video, 0, 0, 0, SIZE), frames.astype(np.uint8))
    stroke = render_clip(plan("tiny")["train"][0], 0, 0, 0, SIZE).astype(np.float32)

    def motion(clip):  # the mean change between consecutive frames
        return float(np.abs(np.diff(clip, axis=0)).mean())

    assert motion(frames) < motion(stroke)


def test_idle_clips_are_added_beside_the_event_clips_and_serve_both(
    tiny: Path, tmp_path: Path, monkeypatch
):
    root = Path(shutil.copytree(tiny, tmp_path / "data"))
    before = digest(tiny)
    events = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    assert "background" not in json.loads((root / ".synthetic.json").read_text())
    (root / "train" / IDLE_ACTION).mkdir()  # a leftover of an interrupted addition
    (root / "train" / IDLE_ACTION / "stale").mkdir()
    assert ensure_synthetic(root, "tiny", seed=0, image_size=SIZE, background=True)
    assert json.loads((root / ".synthetic.json").read_text())["background"] is True
    assert all((root / split / IDLE_ACTION).is_dir() for split in SPLITS)
    assert not (root / "train" / IDLE_ACTION / "stale").exists()
    # The event clips are the very files they were (a job may be reading them), the idle clips
    # the bytes of a twin generated with them from the start.
    assert {p: p.stat().st_mtime_ns for p in events} == events
    assert ensure_synthetic(tmp_path / "whole", "tiny", seed=0, image_size=SIZE, background=True)
    assert digest(root) == digest(tmp_path / "whole")
    assert {k: v for k, v in digest(root).items() if f"/{IDLE_ACTION}/" not in k} == before
    assert not ensure_synthetic(root, "tiny", seed=0, image_size=SIZE, background=True)

    # Back without: the same root as it is (the loader leaves `idle` out), nothing rendered.
    def render(task):
        raise AssertionError("rendered")

    monkeypatch.setattr(generate, "write_video", render)
    assert not ensure_synthetic(root, "tiny", seed=0, image_size=SIZE)
    assert not ensure_synthetic(root, "tiny", seed=0, image_size=SIZE, background=True)
