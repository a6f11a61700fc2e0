"""`python -m tennis_exp.prepare`'s pieces: the split rule by tables, the video reader, synthetic
videos named as THETIS's (the command itself: e2e/test_prepare.py)."""

from __future__ import annotations

import csv
import random
import shutil
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tennis_exp.config import EVENTS, IDLE_ACTION, THETIS_ACTIONS, THETIS_EXCLUDED, PrepareConfig
from tennis_exp.data.matches import prepare_matches, stretches
from tennis_exp.data.segments import Segment, read_segments
from tennis_exp.data.splits import SPLITS, VideoRef, assign, from_manifest, player_of
from tennis_exp.data.video import VIDEO_SUFFIXES, VideoReader
from tennis_exp.errors import UserError
from tennis_exp.synthetic.match import write_match
from tennis_exp.synthetic.videos import write_video, write_videos

from ..helpers.videos import moving_square

ACTIONS = [*THETIS_ACTIONS, *THETIS_EXCLUDED]


def thetis_listing(players: int = 55, takes: int = 3, missing: float = 0.05) -> list[VideoRef]:
    """A listing shaped as THETIS's: every player performs every action a few times, with a few
    takes missing."""
    rng = random.Random(0)
    return [
        VideoRef(f"p{p}_{a}_s{t}", a, f"p{p}")
        for p in range(1, players + 1)
        for a in ACTIONS
        for t in range(1, takes + 1)
        if rng.random() >= missing
    ]


# ---------------------------------------------------------------------------------------------
# The split rule.


@pytest.mark.parametrize(
    "name, player",
    [("p12_backhand_s1", "p12"), ("P3_smash_s2", "p3"), ("clip_7", ""), ("p12", ""), ("px_a", "")],
)
def test_player_of_reads_thetis_names(name, player):
    assert player_of(name) == player


@pytest.mark.parametrize("ratios", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_player_is_in_one_split_and_every_action_meets_the_ratios(ratios, seed):
    refs = thetis_listing()
    splits = assign(refs, ratios, seed)
    of_player = defaultdict(set)
    for ref, split in zip(refs, splits, strict=True):
        of_player[ref.player].add(split)
    assert all(len(held) == 1 for held in of_player.values())
    for action in ACTIONS:
        held = [s for ref, s in zip(refs, splits, strict=True) if ref.action == action]
        for split, ratio in zip(SPLITS, ratios, strict=True):
            # One player's takes of one action are 2% of it: the rule stays within two.
            assert held.count(split) / len(held) == pytest.approx(ratio, abs=0.04), (action, split)


def test_the_split_depends_on_the_listing_and_the_seed_only():
    refs = thetis_listing()
    shuffled = random.Random(1).sample(refs, len(refs))

    def split_of(listing, seed):
        splits = assign(listing, (0.7, 0.15, 0.15), seed)
        return {ref.key: s for ref, s in zip(listing, splits, strict=True)}

    assert split_of(refs, 0) == split_of(shuffled, 0)
    assert split_of(refs, 0) != split_of(refs, 1)


def test_the_split_is_the_same_on_every_machine():
    # The rule hashes, and draws from no library's random generator: this table is fixed.
    refs = [VideoRef(f"p{p}_{a}_s1", a, f"p{p}") for p in range(1, 9) for a in ("smash", "serve")]
    splits = assign(refs, (0.5, 0.25, 0.25), seed=0)
    players = {ref.player: s for ref, s in zip(refs, splits, strict=True)}
    assert players == {
        "p1": "train",
        "p2": "train",
        "p3": "train",
        "p4": "val",
        "p5": "val",
        "p6": "test",
        "p7": "train",
        "p8": "test",
    }


@pytest.mark.parametrize("by_player", [True, False])
def test_videos_without_a_player_are_split_one_by_one_to_the_nearest_video(by_player):
    # Names without p<N>_ (or by_player=false): every action's counts are the nearest to its
    # ratios that whole videos allow.
    names = [
        (f"clip{i}" if by_player else f"p{i % 4}_clip{i}", a)
        for a, n in [("smash", 20), ("backhand", 41), ("flat_service", 7)]
        for i in range(n)
    ]
    refs = [VideoRef(name, action, player_of(name)) for name, action in names]
    splits = assign(refs, (0.7, 0.15, 0.15), seed=3, by_player=by_player)
    for action in ("smash", "backhand", "flat_service"):
        held = [s for ref, s in zip(refs, splits, strict=True) if ref.action == action]
        for split, ratio in zip(SPLITS, (0.7, 0.15, 0.15), strict=True):
            assert abs(held.count(split) - ratio * len(held)) <= 1, (action, split)


def test_a_manifest_gives_the_split_and_refuses_videos_it_does_not_list(tmp_path):
    from tennis_exp.data.splits import write_manifest

    refs = thetis_listing(players=6, takes=1)
    splits = assign(refs, (0.5, 0.25, 0.25), seed=0)
    write_manifest(tmp_path / "m.csv", refs, splits, {refs[0].key: 17})
    assert from_manifest(refs[1:], tmp_path / "m.csv") == (splits[1:], 1)
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video", "action", "player", "split", "frames"]
    assert [r["frames"] for r in rows if r["video"] == refs[0].name] == ["17"]
    with pytest.raises(UserError, match="1 video.s. are not in split.manifest=.*p9_smash_s1"):
        from_manifest([*refs, VideoRef("p9_smash_s1", "smash", "p9")], tmp_path / "m.csv")


# ---------------------------------------------------------------------------------------------
# The video reader.


@pytest.mark.parametrize(
    ("fps_cap", "expected"), [(None, 30), (100.0, 30), (25.0, 30), (10.0, 12), (1.0, 2)]
)
def test_the_reader_streams_resized_frames_under_an_fps_cap(tmp_path, fps_cap, expected):
    path = tmp_path / "clip.mkv"
    write_video(path, moving_square(length=30, size=48), fps=25)  # 1.2 s
    with VideoReader(path, size=16, fps_cap=fps_cap) as video:
        assert (video.info.width, video.info.height, video.info.fps) == (48, 48, 25.0)
        assert video.info.frame_count == 30 and video.info.duration == pytest.approx(1.2)
        frames = list(video)
    assert len(frames) == expected
    assert all(f.image.shape == (16, 16, 3) and f.image.dtype == np.uint8 for f in frames)
    times = [f.time for f in frames]
    assert times[0] == 0 and times == sorted(times)
    if fps_cap and fps_cap < 25:  # kept at the first frame of every 1/fps_cap tick
        assert [int(t * fps_cap + 1e-6) for t in times] == list(range(expected))


@pytest.mark.parametrize(
    ("suffix", "container", "codec"),
    [
        ("avi", "avi", "mpeg4"),
        ("mp4", "mp4", "h264"),
        ("mov", "mov", "mjpeg"),
        ("mkv", "matroska", "vp9"),
    ],
)
def test_the_reader_reads_every_container_prepare_lists(tmp_path, suffix, container, codec):
    try:
        av.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:  # not every PyAV build encodes H.264 or VP9
        pytest.skip(f"this PyAV has no {codec} encoder")
    path = tmp_path / f"clip.{suffix}"
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for frame in moving_square(length=12, size=48):
            padded = np.zeros((48, 64, 3), np.uint8)
            padded[:, :48] = frame
            out.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
        out.mux(stream.encode())
    assert f".{suffix}" in VIDEO_SUFFIXES
    with VideoReader(path, size=32) as video:
        assert (video.info.width, video.info.height, video.info.fps) == (64, 48, 30.0)
        frames = [f.image for f in video]
    assert len(frames) == 12 and frames[0].shape == (32, 32, 3)


def test_an_unreadable_or_empty_video_is_one_line_naming_it(tmp_path):
    garbage, empty, no_frames = tmp_path / "a.avi", tmp_path / "b.mp4", tmp_path / "c.avi"
    garbage.write_bytes(b"not a video" * 100)
    empty.write_bytes(b"")
    with av.open(str(no_frames), "w") as container:  # a header and no frame
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    for path in (garbage, empty, tmp_path / "missing.mov"):
        with pytest.raises(UserError, match=f"^video {path} cannot be read: [^\n]+$"):
            VideoReader(path)
    with pytest.raises(UserError, match=f"^video {no_frames} holds no frame$"):
        list(VideoReader(no_frames))


# ---------------------------------------------------------------------------------------------
# Synthetic videos for the command (e2e/test_prepare.py runs it).


def test_synthetic_videos_are_named_as_thetis(tmp_path):
    written = write_videos(tmp_path / "VIDEO_RGB", preset="tiny", image_size=32, players=6)
    names = {p.stem for p in written}
    assert len(names) == len(written) > 50
    for path in written:
        player, rest = path.stem.split("_", 1)
        assert rest.rsplit("_s", 1)[0] == path.parent.name and player_of(path.stem) == player
    assert {player_of(n) for n in names} == {f"p{i}" for i in range(1, 7)}
    with VideoReader(written[0]) as video:
        assert (video.info.width, video.info.height) == (32, 32)


# ---------------------------------------------------------------------------------------------
# Labelled matches (prepare matches=true): the command itself in e2e/test_prepare.py.


@pytest.fixture(scope="module")
def matches(tmp_path_factory):
    """Three short labelled synthetic matches, with their truth beside them."""
    root = tmp_path_factory.mktemp("matches")
    for match in range(3):
        write_match(root, match, seconds=6, seed=5, image_size=32)
    return root


def matches_cfg(videos, out, **keys):
    cfg = OmegaConf.structured(PrepareConfig(videos=str(videos), out=str(out), matches=True))
    cfg.image_size, cfg.split.train, cfg.split.val, cfg.split.test = 32, 0.34, 0.33, 0.33
    for key, value in keys.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_the_stretches_of_a_match_are_its_segments_and_the_idle_time_around_them():
    truth = [Segment(1, 3, "Smash"), Segment(3, 4, "Net Play"), Segment(6, 7, "Serve")]
    assert stretches(truth) == [(0, IDLE_ACTION), (1, "smash"), (3, "net_play"),
                                (4, IDLE_ACTION), (6, "serve"), (7, IDLE_ACTION)]  # fmt: skip
    assert stretches([Segment(0, 2, "Rally")]) == [(0, "rally"), (2, IDLE_ACTION)]


def test_matches_are_cut_into_clips_of_their_events_and_idle_play_one_split_each(matches, tmp_path):
    out = tmp_path / "out"
    prepare_matches(matches_cfg(matches, out))
    with open(out / "manifest.csv") as f:
        manifest = {row["video"]: row for row in csv.DictReader(f)}
    assert sorted(row["split"] for row in manifest.values()) == sorted(SPLITS)
    for name, row in manifest.items():
        truth = read_segments(matches / f"{name}.segments.csv", EVENTS)
        clips = sorted(out.glob(f"*/*/{name}_*"), key=lambda clip: clip.name)
        assert {clip.parts[-3] for clip in clips} == {row["split"]}  # one split per match
        folders = [clip.parent.name for clip in clips]
        assert folders == [folder for _, folder in stretches(truth)]
        frames = [len(list(clip.glob("*.jpg"))) for clip in clips]
        assert sum(frames) == int(row["frames"])
        # 25 fps: each clip holds its stretch's frames.
        events = [n for n, folder in zip(frames, folders, strict=True) if folder != IDLE_ACTION]
        assert events == [round(s.duration * 25) for s in truth]
    with Image.open(next(out.glob("*/idle/*/frame_0001.jpg"))) as image:
        assert image.size == (32, 32)
    # A rerun of the same settings has nothing left to do.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    prepare_matches(matches_cfg(matches, out))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == mtimes


@pytest.mark.parametrize(
    ("truth", "message"),
    [
        ("start,end,event\n1,3,Rally\n2.5,4,Serve\n",
         r"segments overlap: Rally 1-3 s and Serve 2.5-4 s; a moment holds one event at most"),
        ("start,end,event\n1,3,Lob\n", r"line 2: unknown event 'Lob'"),
        ("start,end,event\n1,3,Rally\n5,60,Serve\n", r"Serve 5-60 s ends after the video's end"),
        (None, r"match match_001.avi has no truth: label it in .*match_001.segments.csv"),
    ],
)  # fmt: skip
def test_a_bad_truth_is_one_line_and_nothing_is_written(matches, tmp_path, truth, message):
    videos = Path(shutil.copytree(matches, tmp_path / "videos"))
    (videos / "match_001.segments.csv").unlink()
    if truth is not None:
        (videos / "match_001.segments.csv").write_text(truth)
    with pytest.raises(UserError, match=message) as raised:
        prepare_matches(matches_cfg(videos, tmp_path / "out"))
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()
