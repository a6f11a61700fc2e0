"""`python -m tennis_exp.prepare` as users type it: videos to the frames layout, split by player,
one line for every mistake; videos -> prepare -> train -> evaluate; its bench."""

from __future__ import annotations

import csv
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from tennis_exp.data.splits import SPLITS
from tennis_exp.synthetic.match import write_match
from tennis_exp.synthetic.videos import write_video, write_videos

from ..helpers.commands import run_cli, run_quick_bench, smoke_args, table_rows
from ..helpers.store import sqlite_uri
from ..helpers.videos import make_videos, moving_square


def prepare(args: list[str], cwd: Path):
    return run_cli(args, cwd, module="tennis_exp.prepare", timeout=120)


def one_line_error(out) -> str:
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    return lines[0]


def manifest_rows(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


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


@pytest.mark.slow
def test_labelled_matches_prepare_train_and_predict_with_their_truth(tmp_path):
    """Matches -> clips of each event and of idle play, split by match -> a model with the
    background class -> predict on the test match, scored against its truth."""
    matches = tmp_path / "matches"
    for match in range(4):
        write_match(matches, match, seconds=8, seed=3, image_size=32)
    bad = Path(shutil.copytree(matches, tmp_path / "bad"))
    (bad / "match_002.segments.csv").write_text("start,end,event\n1,3,Rally\n2,4,Serve\n")
    line = one_line_error(prepare([f"videos={bad}", f"out={tmp_path / 'no'}", "matches=true"],
                                  tmp_path))  # fmt: skip
    assert "match_002.segments.csv: segments overlap: Rally 1-3 s and Serve 2-4 s" in line
    assert not (tmp_path / "no").exists()

    frames = tmp_path / "frames"
    split = ["split.train=0.5", "split.val=0.25", "split.test=0.25"]
    run = prepare([f"videos={matches}", f"out={frames}", "matches=true", "image_size=32", *split],
                  tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    [test_match] = [r["video"] for r in manifest_rows(frames) if r["split"] == "test"]
    assert {p.name for p in (frames / "train").iterdir()} >= {"idle", "rally"}

    args = smoke_args(frames, tmp_path, "data=matches", "hardware=cpu",
                      f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    trained = run_cli(args, tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "No event" in trained.stdout  # the class counts of every split
    assert re.search(r"the events on their clips alone: \d\.\d{3}", trained.stdout)
    out = run_cli(
        [f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'best.pth'}",
         f"video={matches / f'{test_match}.avi'}", f"truth={matches}", "hardware=cpu",
         f"tracking.uri={sqlite_uri(tmp_path)}", f"hydra.run.dir={tmp_path / 'p'}"],
        tmp_path, module="tennis_exp.predict",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Scores against the truth (1 video(s)" in out.stdout
    with open(tmp_path / "p" / test_match / "windows.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "p_No event" in rows[0]
    # No event is the model's answer: a window says no event exactly where it is the best class.
    for row in rows:
        smoothed = {k: float(v) for k, v in row.items() if k.startswith("smoothed_")}
        best = max(smoothed, key=smoothed.get)
        assert (row["event"] == "") == (best == "smoothed_No event")
