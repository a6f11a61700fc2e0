"""`python -m tennis_exp.prepare`: videos to the frames layout, split by player, as users type it;
the split rule by tables; the video reader; videos -> prepare -> train -> evaluate."""

from __future__ import annotations

import csv
import random
import shutil
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tennis_exp.config import THETIS_ACTIONS, THETIS_EXCLUDED
from tennis_exp.data.splits import SPLITS, VideoRef, assign, from_manifest, player_of
from tennis_exp.data.video import VIDEO_SUFFIXES, VideoReader
from tennis_exp.errors import UserError
from tennis_exp.synthetic.videos import write_video, write_videos

from ..helpers.commands import run_cli, run_quick_bench, table_rows

ACTIONS = [*THETIS_ACTIONS, *THETIS_EXCLUDED]


def prepare(args: list[str], cwd: Path):
    return run_cli(args, cwd, module="tennis_exp.prepare", timeout=120)


def moving_square(length: int = 20, size: int = 32, shade: int = 0) -> np.ndarray:
    """(length, size, size, 3) uint8: a square crossing the image, one step per frame."""
    frames = np.full((length, size, size, 3), shade, np.uint8)
    for t in range(length):
        x = t * (size - 8) // max(length - 1, 1)
        frames[t, 12:20, x : x + 8] = 255
    return frames


def make_videos(root: Path, players: int = 8, actions=("smash", "backhand", "flat_service")):
    """THETIS-named tiny videos: one take per player and action."""
    for action in actions:
        (root / action).mkdir(parents=True, exist_ok=True)
        for player in range(1, players + 1):
            write_video(root / action / f"p{player}_{action}_s1.avi", moving_square(shade=player))
    return root


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


def one_line_error(out) -> str:
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    return lines[0]


def manifest_rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


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
# The command.


def test_prepare_writes_the_layout_the_manifest_and_the_counts(tmp_path):
    videos, out = make_videos(tmp_path / "VIDEO_RGB"), tmp_path / "frames"
    run = prepare([f"videos={videos}", f"out={out}", "image_size=24", "quality=80"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "videos per split and action:" in run.stdout
    assert (
        "24 video(s) to prepare" in run.stdout and "prepared 24 video(s), 480 frames" in run.stdout
    )

    rows = manifest_rows(out)
    assert len(rows) == 24 and {r["frames"] for r in rows} == {"20"}
    for row in rows:
        folder = out / row["split"] / row["action"] / row["video"]
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"frame_{i:04d}.jpg" for i in range(1, 21)]
        with Image.open(folder / "frame_0001.jpg") as image:
            assert image.size == (24, 24)
    splits_of = defaultdict(set)
    for row in rows:
        splits_of[row["player"]].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values()) and len(splits_of) == 8
    assert {r["split"] for r in rows} == set(SPLITS)
    # Nothing but the layout, the manifest and prepare's own hidden files; nothing in the cwd.
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "manifest.csv",
        "test",
        "train",
        "val",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VIDEO_RGB", "frames"]


def test_a_rerun_continues_an_interrupted_prepare(tmp_path):
    videos, out = make_videos(tmp_path / "VIDEO_RGB"), tmp_path / "frames"
    args = [f"videos={videos}", f"out={out}", "image_size=16", "workers=2"]
    assert prepare(args, tmp_path).returncode == 0
    # As a kill leaves it: one video's folder never renamed into place, half its frames written.
    row = manifest_rows(out)[5]
    done = out / row["split"] / row["action"] / row["video"]
    partial = out / ".partial" / done.relative_to(out)
    partial.parent.mkdir(parents=True)
    shutil.move(done, partial)
    for frame in sorted(partial.iterdir())[10:]:
        frame.unlink()

    run = prepare(args, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "1 video(s) to prepare" in run.stdout and "23 already prepared" in run.stdout
    assert len(list(done.iterdir())) == 20 and not (out / ".partial").exists()
    assert manifest_rows(out)[5] == row


def test_an_unreadable_video_is_named_skipped_and_fails_the_command(tmp_path):
    videos, out = make_videos(tmp_path / "VIDEO_RGB"), tmp_path / "frames"
    bad = videos / "smash" / "p2_smash_s1.avi"
    bad.write_bytes(b"truncated download")
    args = [f"videos={videos}", f"out={out}", "image_size=16"]
    run = prepare(args, tmp_path)
    assert run.returncode == 1
    assert f"skipped {bad}: video {bad} cannot be read" in run.stderr
    assert f"not prepared: {bad}" in run.stdout  # the list at the end
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("Error: 1 video(s) could not be prepared and were skipped")
    )
    rows = {r["video"]: r for r in manifest_rows(out)}
    assert rows["p2_smash_s1"]["frames"] == "" and len(rows) == 24
    assert not list(out.glob("*/smash/p2_smash_s1"))
    assert "prepared 23 video(s)" in run.stdout

    write_video(bad, moving_square())  # downloaded again: the rerun prepares it alone
    run = prepare(args, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "1 video(s) to prepare" in run.stdout


def test_a_manifest_reproduces_a_split_elsewhere(tmp_path):
    videos = make_videos(tmp_path / "VIDEO_RGB")
    first, second = tmp_path / "lab_a", tmp_path / "lab_b"
    assert prepare([f"videos={videos}", f"out={first}", "image_size=16"], tmp_path).returncode == 0
    run = prepare(
        [
            f"videos={videos}",
            f"out={second}",
            "image_size=16",
            f"split.manifest={first / 'manifest.csv'}",
            "split.seed=7",  # ignored: the manifest decides
        ],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert manifest_rows(first) == manifest_rows(second)


def test_an_unknown_action_folder_is_warned_about_and_counted(tmp_path):
    videos, out = make_videos(tmp_path / "VIDEO_RGB"), tmp_path / "frames"
    make_videos(videos, players=3, actions=("tweener",))
    run = prepare([f"videos={videos}", f"out={out}", "image_size=16"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "skipped 3 video(s) in action folder(s) not in `actions`: tweener (3)" in run.stdout
    assert not list(out.glob("*/tweener"))


def test_help_names_the_keys():
    run = prepare(["--help"], Path.cwd())
    assert run.returncode == 0
    assert "videos=<folder> out=<folder>" in run.stdout and "split:" in run.stdout


def _prepared(tmp_path):
    videos, out = make_videos(tmp_path / "VIDEO_RGB"), tmp_path / "frames"
    assert prepare([f"videos={videos}", f"out={out}", "image_size=16"], tmp_path).returncode == 0
    return videos, out


def _foreign(tmp_path):
    videos = make_videos(tmp_path / "VIDEO_RGB")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "notes.txt").write_text("mine")
    return videos, tmp_path / "frames"


def _fresh(tmp_path):
    return make_videos(tmp_path / "VIDEO_RGB"), tmp_path / "frames"


def _no_videos(tmp_path):
    return tmp_path / "nowhere", tmp_path / "frames"


def _one_action(tmp_path):
    return make_videos(tmp_path / "VIDEO_RGB") / "smash", tmp_path / "frames"


def _empty_videos(tmp_path):
    (tmp_path / "VIDEO_RGB" / "smash").mkdir(parents=True)
    return tmp_path / "VIDEO_RGB", tmp_path / "frames"


BAD_INPUTS = [
    # (setup, overrides, the error line's start)
    (_no_videos, [], "Error: videos={tmp}/nowhere does not exist"),
    (_empty_videos, [], "Error: videos={tmp}/VIDEO_RGB holds no video to prepare;"),
    (_one_action, [], "Error: videos={tmp}/VIDEO_RGB/smash holds videos but no action folder"),
    (_fresh, ["split.val=0.2"], "Error: split.train + split.val + split.test = 1.05"),
    (_fresh, ["split.test=-0.1", "split.train=0.95"], "Error: split.test=-0.1 is invalid"),
    (_fresh, ["quality=0"], "Error: quality=0 is invalid: it must be an integer from 1 to 95"),
    (_fresh, ["image_size=8"], "Error: image_size=8 is invalid: it must be an integer >= 16"),
    (_fresh, ["fps=0"], "Error: fps=0.0 is invalid: it must be > 0"),
    (
        _fresh,
        ["split.manifest={tmp}/lab.csv"],
        "Error: split.manifest={tmp}/lab.csv does not exist",
    ),
    (_fresh, ["split.train=0.9", "split.val=0.1", "split.test=0"], None),  # valid: the control
    (_prepared, ["image_size=32"], "Error: out={tmp}/frames holds another dataset: image_size=16"),
    (_prepared, ["split.seed=2"], "Error: out={tmp}/frames holds another dataset: another split"),
    (_foreign, [], "Error: out={tmp}/frames is not empty and was not written by prepare"),
]


@pytest.mark.parametrize(("setup", "overrides", "error"), BAD_INPUTS)
def test_a_bad_input_is_one_line_and_writes_nothing(tmp_path, setup, overrides, error):
    videos, out = setup(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    if not any(o.startswith("image_size=") for o in overrides):
        overrides.append("image_size=16")
    run = prepare([f"videos={videos}", f"out={out}", *overrides], tmp_path)
    if error is None:
        assert run.returncode == 0, run.stderr
        return
    assert one_line_error(run).startswith(error.format(tmp=tmp_path))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------------------------------------
# End to end: raw videos -> prepare -> train -> evaluate.


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


# Slow: 60 to 80 s on a shared 2-core machine. CI runs the same commands in the same order
# through the Colab notebook (tests/e2e/test_notebook.py).
@pytest.mark.slow
def test_videos_to_frames_to_a_trained_and_evaluated_model(tmp_path):
    videos, frames = tmp_path / "VIDEO_RGB", tmp_path / "frames"
    write_videos(videos, preset="tiny", image_size=32)
    run = prepare([f"videos={videos}", f"out={frames}", "image_size=32"], tmp_path)
    assert run.returncode == 0, run.stderr

    data = [
        "data=thetis",
        f"data.root={frames}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "debug=smoke",
        "hardware=cpu",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    train = run_cli([*data, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "test (best val weights)" in train.stdout
    best = tmp_path / "run" / "checkpoints" / "best.pth"
    assert best.exists()

    pytest.importorskip("tennis_exp.evaluate")  # the evaluate command is built on main
    evaluate = run_cli(
        [*data, f"checkpoint={best}", f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=tmp_path,
        module="tennis_exp.evaluate",
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert "f1-score" in evaluate.stdout


@pytest.mark.slow
def test_the_prepare_bench_writes_a_number_in_every_row(tmp_path):
    # It checks no speed: a quick run's numbers on a test machine mean nothing.
    text, _ = run_quick_bench("prepare", tmp_path, "*-prepare.md")
    rows = table_rows(text, "measurement")
    assert "| measurement |" in text and len(rows) == 8
    assert all(float(value) > 0 for _, value, _ in rows)
