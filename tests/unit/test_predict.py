"""`python -m tennis_exp.predict`'s pieces: the window -> segment rule and the detection metrics
by hand-computed tables, the streamed windows against windows cut from the whole decoded video,
synthetic matches (the command itself: e2e/test_predict.py)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from tennis_exp.config import BACKGROUND, IDLE_ACTION, validate
from tennis_exp.data.segments import (
    Segment,
    read_segments,
    write_segments_csv,
    write_segments_json,
)
from tennis_exp.data.video import VideoReader
from tennis_exp.engine import checkpoint
from tennis_exp.engine.hardware import plan_run
from tennis_exp.errors import UserError
from tennis_exp.inference.detection_metrics import (
    Scores,
    average_precision,
    detections,
    iou,
    match_segments,
)
from tennis_exp.inference.pipeline import background_index, read_truths, scored_events
from tennis_exp.inference.runner import Predictor, Progress
from tennis_exp.inference.segments import (
    NONE,
    event_runs,
    min_confidence,
    runs,
    smooth,
    smoothing_width,
    speaking_bounds,
    to_segments,
    window_labels,
)
from tennis_exp.inference.trained_model import trained_model
from tennis_exp.inference.windows import Ring
from tennis_exp.models.cnn_lstm import build_model
from tennis_exp.synthetic.match import match_parts, truth, write_match

from ..helpers.configs import compose_config
from ..helpers.videos import moving_video

EVENTS = ["Smash", "Net Play", "Rally", "Serve"]
A, B = "Smash", "Net Play"


# --- windows -> segments ------------------------------------------------------------------------


def test_each_window_speaks_from_halfway_to_its_neighbours():
    assert speaking_bounds(np.array([0.5, 1.5, 2.5]), 3.2).tolist() == [0, 1, 2, 3.2]
    assert speaking_bounds(np.array([0.3]), 1.0).tolist() == [0, 1.0]


@pytest.mark.parametrize(
    ("seconds", "hop", "width"), [(1.0, 0.32, 3), (1.0, 0.25, 5), (0.0, 0.32, 1), (0.4, 1.0, 1)]
)
def test_the_smoothing_width_is_odd_windows_of_about_the_seconds_asked(seconds, hop, width):
    assert smoothing_width(seconds, hop) == width


def test_the_moving_average_is_centred_and_averages_what_there_is_at_the_ends():
    probs = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=float)
    expected = [[0.5, 0.5], [2 / 3, 1 / 3], [2 / 3, 1 / 3], [1, 0]]
    assert smooth(probs, 3) == pytest.approx(np.array(expected))
    assert (smooth(probs, 1) == probs).all()


def test_a_window_below_min_confidence_speaks_for_no_event():
    smoothed = np.array([[0.6, 0.4], [0.5, 0.5], [0.3, 0.2]])
    assert window_labels(smoothed, 0.5).tolist() == [0, 0, NONE]
    assert runs(np.array([0, 0, NONE, 1, 1, 0])) == [(0, 0, 1), (NONE, 2, 2), (1, 3, 4), (0, 5, 5)]


def test_with_a_background_class_no_event_is_the_models_answer_the_threshold_an_option():
    # columns: Smash, Net Play, No event
    smoothed = np.array([[0.5, 0.1, 0.4], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    assert window_labels(smoothed, 0.0, background=2).tolist() == [0, NONE, 0]
    assert window_labels(smoothed, 0.45, background=2).tolist() == [0, NONE, NONE]
    assert min_confidence(None, 2) == 0 and min_confidence(None, None) == 0.5
    assert min_confidence(0.3, 2) == 0.3
    bounds = np.arange(4) * 0.5
    segments = to_segments(smoothed, bounds, [A, B, BACKGROUND], 0.0, 0.0, background=2)
    assert [(s.start, s.end, s.event) for s in segments] == [(0, 0.5, A), (1.0, 1.5, A)]


def test_a_background_model_scores_and_reads_truth_on_its_events_only(tmp_path):
    cfg = compose_config(["data=synthetic"])
    cfg.data.events = [*EVENTS, BACKGROUND]
    assert scored_events(cfg) == EVENTS and background_index(list(cfg.data.events)) == 4
    truth = tmp_path / "m.segments.csv"
    truth.write_text("start,end,event\n0,1,No event\n")
    with pytest.raises(UserError, match="unknown event 'No event'"):
        read_truths(str(truth), [tmp_path / "m.avi"], scored_events(cfg))


@pytest.mark.parametrize(
    ("labels", "min_duration", "expected"),
    [
        # a flicker of another event inside a run: joined (the gap is 0.5 s < 1 s)
        ([0, 0, 0, 1, 0, 0, 0], 1.0, [(0, 0, 6)]),
        # a pause of exactly min_duration is kept; both runs are long enough
        ([0, 0, NONE, NONE, 0, 0], 1.0, [(0, 0, 1), (0, 4, 5)]),
        # a run of 0.5 s is dropped
        ([0, NONE, 1, 1, 1], 1.0, [(1, 2, 4)]),
        # another event of 1 s between two runs: no join across 1.5 s
        ([0, 0, 1, 1, NONE, 0, 0], 1.0, [(0, 0, 1), (1, 2, 3), (0, 5, 6)]),
        ([0, 1, 0], 0.0, [(0, 0, 0), (1, 1, 1), (0, 2, 2)]),
        ([NONE, NONE], 1.0, []),
    ],
)
def test_the_segment_rule_joins_short_gaps_then_drops_short_runs(labels, min_duration, expected):
    bounds = np.arange(len(labels) + 1) * 0.5  # every window speaks for 0.5 s
    assert event_runs(np.array(labels), bounds, min_duration) == expected


def test_segments_span_their_windows_speaking_bounds_with_the_mean_probability():
    smoothed = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.45, 0.4]])
    bounds = np.array([0, 1, 2, 3, 4, 5.5])
    segments = to_segments(smoothed, bounds, [A, B], 0.5, 1.0)
    assert segments == [
        Segment(0, 2, A, pytest.approx(0.85)),
        Segment(2, 4, B, pytest.approx(0.75)),
    ]


# --- metrics --------------------------------------------------------------------------------------


def test_iou():
    assert iou(Segment(0, 2, A), Segment(1, 3, A)) == pytest.approx(1 / 3)
    assert iou(Segment(0, 2, A), Segment(2, 4, A)) == 0
    assert iou(Segment(0, 4, A), Segment(1, 3, A)) == 0.5


def test_segments_match_one_to_one_by_confidence_at_iou_half():
    truth_ = [Segment(0, 4, A), Segment(4, 8, B)]
    predicted = [
        Segment(0, 3, A, 0.9),  # IoU 0.75: right
        Segment(0.5, 2, A, 0.95),  # IoU 0.375: wrong, though the most confident
        Segment(5, 8, B, 0.5),  # IoU 0.75: right
        Segment(4, 8, B, 0.4),  # the B truth is taken: wrong
        Segment(0, 4, B, 0.99),  # the wrong event: wrong
    ]
    assert match_segments(truth_, predicted) == 2


def test_detections_within_one_second_of_a_free_true_start_in_confidence_order():
    truth_ = [Segment(t, t + 3, A) for t in (0, 10, 20)] + [Segment(5, 6, B)]
    predicted = [
        Segment(0.5, 3, A, 0.9),  # 0.5 s from 0: right
        Segment(0.8, 4, A, 0.8),  # 0 is taken, 10 is 9.2 s away: wrong
        Segment(11.0, 14, A, 0.7),  # exactly 1 s from 10: right
        Segment(30, 31, A, 0.6),  # wrong
        Segment(19.2, 22, A, 0.5),  # right
        Segment(5, 6, B, 0.99),  # another event: not a detection of A
    ]
    found = detections(truth_, predicted, A)
    assert found == [(0.9, True), (0.8, False), (0.7, True), (0.6, False), (0.5, True)]
    # precision at each hit, made non-increasing: 1, 2/3, 3/5; over 3 true events
    assert average_precision(found, 3) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert average_precision([(0.5, False)], 3) == 0
    assert math.isnan(average_precision([(0.5, False)], 0))


def test_frame_accuracy_counts_idle_frames_as_no_event_and_separately_without_them():
    scores = Scores([A, B])
    # 8 frames at 2 fps: truth A A A A - - - -, predicted A A B B - - - -
    scores.add([Segment(0, 2, A)], [Segment(0, 1, A, 0.9), Segment(1, 2, B, 0.8)], 4.0, 2.0)
    s = scores.summary()
    assert (s["frame_acc"], s["frame_acc_events"], s["frame_acc_no_event"]) == (6 / 8, 2 / 4, 1)
    # An event that runs on into idle play: 2 of the 4 idle frames wrong.
    late = Scores([A, B])
    late.add([Segment(0, 2, A)], [Segment(0, 3, A)], 4.0, 2.0)
    assert late.summary()["frame_acc_no_event"] == 2 / 4
    # A 0-1 overlaps A 0-2 by IoU 0.5: a match; B has no true segment
    assert (s["segment_precision"], s["segment_recall"], s["segment_f1"]) == (0.5, 1, 2 / 3)
    assert s["ap_1s_smash"] == 1.0 and math.isnan(s["ap_1s_net_play"])
    assert s["map_1s"] == 1.0  # the mean over the events the truth holds


def test_scores_pool_videos_each_matched_on_its_own():
    scores = Scores([A, B])
    scores.add([Segment(0, 4, A)], [Segment(0, 4, A, 0.6)], 4.0, 1.0)
    # the same times in another video: not a match for the first video's truth
    scores.add([Segment(10, 14, B)], [Segment(0, 4, A, 0.9)], 14.0, 1.0)
    s = scores.summary()
    assert (s["true_segments"], s["predicted_segments"]) == (2, 2)
    assert s["segment_f1"] == 0.5 and s["frame_acc"] == pytest.approx((4 + 6) / (4 + 14))
    assert s["ap_1s_smash"] == pytest.approx(0.5)  # the wrong one ranks first
    assert s["ap_1s_net_play"] == 0 and s["map_1s"] == pytest.approx(0.25)


# --- segment files --------------------------------------------------------------------------------


def test_segments_files_read_back(tmp_path):
    segments = [Segment(0.5, 2.25, A, 0.875), Segment(3, 4.5, B, 0.5)]
    write_segments_csv(tmp_path / "s.csv", segments)
    write_segments_json(tmp_path / "s.json", segments, "v.avi", 5.0)
    assert read_segments(tmp_path / "s.csv", EVENTS) == segments
    assert read_segments(tmp_path / "s.json", EVENTS) == segments
    (tmp_path / "bare.json").write_text('[{"start": 1, "end": 2, "event": "Rally"}]')
    assert read_segments(tmp_path / "bare.json", EVENTS) == [Segment(1, 2, "Rally", 1.0)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.csv", "start,end\n1,2\n", "lacks the column(s) event"),
        ("t.csv", "start,end,event\n1,2,Smash\nx,3,Rally\n", "line 3: start and end must be"),
        ("t.csv", "start,end,event\n2,1,Smash\n", "line 2: expected 0 <= start < end"),
        ("t.csv", "start,end,event\n1,2,Lob\n", "line 2: unknown event 'Lob'"),
        ("t.json", "{not json", "is not valid JSON"),
        ("t.json", '{"segments": 3}', "holds no segment list"),
        ("t.json", '{"segments": [{"start": 1, "event": "Rally"}]}', "segment 1: start and end"),
    ],
)
def test_a_malformed_truth_file_is_one_line_naming_the_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(
        UserError, match=f"^truth {re.escape(str(path))} [^\n]*{re.escape(message)}"
    ):
        read_segments(path, EVENTS)


# --- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "window", "stride", "batch"),
    [(50, 16, 8, 7), (50, 16, 16, 64), (15, 16, 8, 4), (40, 4, 1, 3), (100, 16, 5, 16)],
)
def test_the_ring_cuts_the_windows_of_the_whole_stream_holding_few_items(
    length, window, stride, batch
):
    items = torch.arange(length)
    ring = Ring(window, stride)
    got, times = [], []
    for chunk in items.split(batch):
        windows, window_times = ring.push(chunk, chunk.double() / 10)
        got += windows.tolist()
        times += window_times.tolist()
    expected = [list(range(s, s + window)) for s in range(0, length - window + 1, stride)]
    assert got == expected
    assert times == [[i / 10 for i in w] for w in expected]
    assert ring.peak <= window - 1 + batch


def test_streamed_windows_are_the_models_windows_cut_from_the_whole_video(tmp_path):
    cfg = compose_config(["debug=smoke", "hardware=cpu"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 4).eval()
    video = moving_video(tmp_path / "v.avi")
    size, window, stride, batch = cfg.data.image_size, 16, 5, 7
    predictor = Predictor(model, plan_run(cfg), window, stride, batch)
    with VideoReader(video, size) as reader:
        streamed = predictor.run(reader, 1 / 25, Progress("v", None, False))
    with VideoReader(video, size) as reader:
        frames = list(reader)
    starts = range(0, len(frames) - window + 1, stride)
    clips = (
        torch.stack(
            [torch.from_numpy(np.stack([f.image for f in frames[s : s + window]])) for s in starts]
        )
        .permute(0, 1, 4, 2, 3)
        .contiguous()
    )
    with torch.no_grad():
        expected = model(clips).softmax(1).numpy()
    assert streamed.probabilities == pytest.approx(expected, abs=1e-5)
    assert streamed.start.tolist() == pytest.approx([frames[s].time for s in starts])
    assert streamed.end.tolist() == pytest.approx(
        [frames[s + window - 1].time + 1 / 25 for s in starts]
    )
    assert (streamed.frames, streamed.duration) == (61, pytest.approx(61 / 25))
    # bounded memory: the features of at most a window and a batch of frames
    assert predictor.ring.peak <= window - 1 + batch


# --- synthetic matches ----------------------------------------------------------------------------


def test_a_match_alternates_idle_play_and_events_never_the_same_twice():
    parts = match_parts(120, np.random.default_rng(0))
    assert parts[0].event is None and parts[-1].event is None
    events = [p.event for p in parts if p.event is not None]
    assert all(a != b for a, b in zip(events, events[1:], strict=False))
    assert set(events) == set(EVENTS) and sum(p.frames for p in parts) / 25 >= 120
    assert all(p.frames >= 25 for p in parts)  # at least 1 s each
    segments = truth(parts)
    assert [s.event for s in segments] == events
    assert segments[0].start == parts[0].frames / 25


def test_a_match_is_written_as_a_video_and_its_truth(tmp_path):
    video, segments = write_match(tmp_path, 0, seconds=6, image_size=32)
    truth_ = read_segments(segments, EVENTS)
    with VideoReader(video) as reader:
        frames = list(reader)
    assert frames[0].image.shape == (32, 32, 3)
    parts = match_parts(6, np.random.default_rng(np.random.SeedSequence([0, 1000, 0, 1])))
    assert len(frames) == sum(p.frames for p in parts)
    assert [(s.start, s.end, s.event) for s in truth_] == [
        (s.start, s.end, s.event) for s in truth(parts)
    ]


def test_a_background_checkpoint_brings_its_class_and_idle_folder_to_the_command(tmp_path):
    trained = compose_config(["debug=smoke", "data.background=true", "data.root=/frames"])
    validate(trained)
    model = build_model(trained.model, len(trained.data.events))
    config = OmegaConf.to_container(trained, resolve=True, enum_to_str=True)
    checkpoint.save(tmp_path / "best.pth", checkpoint.Checkpoint(model.state_dict(), config))
    cfg = compose_config(["debug=smoke", "data.root=/frames"])  # as evaluate is typed: no key
    with open_dict(cfg):
        cfg.checkpoint = str(tmp_path / "best.pth")
    trained_model(cfg)
    assert list(cfg.data.events) == [*EVENTS, BACKGROUND] and cfg.data.background
    assert cfg.data.actions[IDLE_ACTION] == BACKGROUND
