"""`python -m tennis_exp.predict` as users type it: train, generate a match, predict and score
it, one line for every mistake; and its quick bench."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from mlflow.tracking import MlflowClient

from tennis_exp.data.segments import read_segments
from tennis_exp.data.video import VideoReader
from tennis_exp.synthetic.match import write_match

from ..helpers.commands import run_cli, run_quick_bench, smoke_args
from ..helpers.store import copy_store, runs_of, sqlite_uri
from ..helpers.videos import moving_video

EVENTS = ["Smash", "Net Play", "Rally", "Serve"]


@pytest.fixture(scope="module")
def trained(tiny_twin, empty_store, tmp_path_factory):
    """A smoke model and a short synthetic match with its truth."""
    root = tmp_path_factory.mktemp("predict")
    copy_store(empty_store, root)
    out = run_cli(
        smoke_args(tiny_twin, root, "hardware=cpu", f"hydra.run.dir={root / 'run'}"), cwd=root
    )
    assert out.returncode == 0, out.stderr[-3000:]
    write_match(root / "matches", 0, seconds=8)
    return root


def predict(args, cwd):
    return run_cli(args, cwd, module="tennis_exp.predict", timeout=300)


def test_predict_a_match_gives_segments_plot_scores_and_a_video(trained, tmp_path):
    match = trained / "matches" / "match_000.avi"
    out = predict(
        [f"checkpoint={trained / 'run' / 'checkpoints' / 'best.pth'}", f"video={match}",
         f"truth={trained / 'matches' / 'match_000.segments.csv'}", "hardware=cpu",
         # an untrained model is never confident: every window speaks for an event
         "predict.min_confidence=0", "predict.render=true", f"tracking.uri={sqlite_uri(trained)}",
         f"hydra.run.dir={tmp_path / 'p'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Scores against the truth (1 video(s)" in out.stdout
    assert "x real time" in out.stdout
    folder = tmp_path / "p" / "match_000"
    segments = read_segments(folder / "segments.csv", EVENTS)
    assert segments and segments == read_segments(folder / "segments.json", EVENTS)
    assert (folder / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(folder / "windows.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(abs(sum(float(r[f"p_{e}"]) for e in EVENTS) - 1) < 1e-4 for r in rows)
    duration = json.loads((folder / "segments.json").read_text())["duration"]
    assert float(rows[0]["speaks_from"]) == 0 and float(rows[-1]["speaks_to"]) == duration
    scores = json.loads((tmp_path / "p" / "scores.json").read_text())["all"]
    for key in ("frame_acc", "frame_acc_events", "segment_f1", "map_1s", "ap_1s_rally"):
        assert 0 <= scores[key] <= 1, key
    with VideoReader(folder / "match_000.events.mp4") as rendered, VideoReader(match) as source:
        assert rendered.info.height >= 256 and len(list(rendered)) == len(list(source))

    runs = runs_of(sqlite_uri(trained))
    [training] = [r for r in runs if "tennis_exp.role" not in r.data.tags]
    [run] = [r for r in runs if r.data.tags.get("tennis_exp.role") == "prediction"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == training.info.run_id
    assert run.data.metrics["map_1s"] == scores["map_1s"]
    assert run.data.metrics["speed/realtime_factor"] > 0
    client = MlflowClient(sqlite_uri(trained))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "match_000")}
    assert {"match_000/segments.csv", "match_000/timeline.png", "match_000/windows.csv"} <= (
        artifacts
    )


def test_a_folder_of_videos_is_scored_against_a_folder_of_truths(trained, tmp_path):
    matches = trained / "matches"
    out = predict(
        [f"checkpoint={trained / 'run' / 'checkpoints' / 'best.pth'}", f"video={matches}",
         f"truth={matches}", "hardware=cpu", f"tracking.uri={sqlite_uri(tmp_path)}",
         f"hydra.run.dir={tmp_path / 'p'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    scores = json.loads((tmp_path / "p" / "scores.json").read_text())
    assert set(scores["videos"]) == {"match_000"}
    assert (tmp_path / "p" / "match_000" / "segments.csv").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["video={garbage}"], "video {garbage} cannot be read"),
        (["video={short}"], "video {short} is shorter than one window: 10 frame(s) at 25 fps"),
        (["video={match}", "checkpoint={foreign}"], "does not fit this model"),
        (["video={empty}"], "video={empty} holds no video (.avi, .mp4, .mov, .mkv)"),
        (["video={match}", "truth={bad_truth}"], "truth {bad_truth} line 2: unknown event"),
        (["video={match}", "truth={empty}"], "truth={empty} holds no match_000.segments.csv"),
        (["video={match}", "predict.stride=17"], "predict.stride=17 is invalid"),
        (["checkpoint={best}"], "Missing mandatory value: video"),
    ],
)
def test_mistakes_are_one_line_and_leave_no_run(trained, tmp_path, args, expected):
    paths = {
        "best": trained / "run" / "checkpoints" / "best.pth",
        "match": trained / "matches" / "match_000.avi",
        "garbage": tmp_path / "garbage.avi",
        "short": moving_video(tmp_path / "short.avi", length=10),
        "foreign": tmp_path / "foreign.pth",
        "empty": tmp_path / "empty",
        "bad_truth": tmp_path / "truth.csv",
    }
    paths["garbage"].write_bytes(b"not a video" * 100)
    torch.save({"model_state_dict": {"head.weight": torch.zeros(1)}}, paths["foreign"])
    paths["empty"].mkdir()
    paths["bad_truth"].write_text("start,end,event\n1,2,Lob\n")
    given = [a.format(**paths) for a in args]
    if not any(a.startswith("checkpoint=") for a in given):
        given.append(f"checkpoint={paths['best']}")
    out = predict(
        [*given, "hardware=cpu", f"tracking.uri={sqlite_uri(tmp_path)}",
         f"hydra.run.dir={tmp_path / 'p'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert expected.format(**paths) in lines[0]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_the_quick_predict_bench_writes_its_table(tmp_path):
    text, printed = run_quick_bench("predict", tmp_path, "*-predict.md")
    assert "| predict (decode, model, windows), 1 torch thread(s) |" in text and text in printed
