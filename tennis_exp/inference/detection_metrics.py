"""Scores of predicted segments against ground-truth segments, over one video or pooled over
several (each video matched on its own, the counts and detections pooled).

- Frame-level accuracy: the label at each frame (the event of the segment that holds the
  frame's centre, or "no event") against the truth's. `frame_acc` counts every frame, idle play
  included, which must then be predicted as no event; `frame_acc_events` counts only the frames
  the truth gives an event, the question the 4-event model answers.
- Segment F1 at IoU 0.5: a predicted segment is right when it overlaps a true segment of its
  event, not already matched, by intersection over union >= 0.5; predictions are matched in
  order of confidence.
- Event detection average precision with a one-second tolerance (mAP@1s, the users' planned
  metric): an event happens at its segment's start. A predicted segment is a detection of its
  event at its start with its confidence; in order of confidence, it is right when it is within
  1 s of a true start of its event not already matched (the nearest). AP per event is the area
  under the precision-recall curve with precision made non-increasing (the all-point rule of
  PASCAL VOC); mAP is their mean over the events the truth holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tennis_exp.config import metric_name
from tennis_exp.data.segments import Segment
from tennis_exp.inference.segments import NONE

IOU = 0.5
TOLERANCE = 1.0  # seconds


def frame_labels(segments: list[Segment], events: list[str], times: np.ndarray) -> np.ndarray:
    """Each time's event index, or NONE outside every segment (the later one where two meet)."""
    labels = np.full(len(times), NONE)
    for s in segments:
        labels[(times >= s.start) & (times < s.end)] = events.index(s.event)
    return labels


def frame_times(duration: float, fps: float) -> np.ndarray:
    """The centres of a video's frames at `fps`."""
    return (np.arange(int(round(duration * fps))) + 0.5) / fps


def iou(a: Segment, b: Segment) -> float:
    overlap = min(a.end, b.end) - max(a.start, b.start)
    if overlap <= 0:
        return 0.0
    return overlap / (max(a.end, b.end) - min(a.start, b.start))


def match_segments(truth: list[Segment], predicted: list[Segment], threshold: float = IOU) -> int:
    """True positives: predictions matched one-to-one, by confidence, to true segments of their
    event with IoU >= threshold (each to its best-overlapping free one)."""
    free = list(truth)
    hits = 0
    for p in sorted(predicted, key=lambda s: -s.confidence):
        scored = [(iou(p, t), i) for i, t in enumerate(free) if t.event == p.event]
        best = max(scored, default=(0.0, -1))
        if best[0] >= threshold:
            hits += 1
            del free[best[1]]
    return hits


def detections(
    truth: list[Segment], predicted: list[Segment], event: str, tolerance: float = TOLERANCE
) -> list[tuple[float, bool]]:
    """(confidence, right) of each detection of `event`: its start within `tolerance` of a free
    true start of the event (the nearest), in order of confidence."""
    free = [t.start for t in truth if t.event == event]
    found = []
    for p in sorted((s for s in predicted if s.event == event), key=lambda s: -s.confidence):
        distance, nearest = min(((abs(p.start - t), i) for i, t in enumerate(free)),
                                default=(np.inf, -1))  # fmt: skip
        right = distance <= tolerance
        if right:
            del free[nearest]
        found.append((p.confidence, right))
    return found


def average_precision(found: list[tuple[float, bool]], positives: int) -> float:
    """Area under the precision-recall curve of detections (confidence, right), precision made
    non-increasing; NaN without positives."""
    if positives == 0:
        return float("nan")
    ranked = sorted(found, key=lambda d: -d[0])
    right = np.array([r for _, r in ranked], dtype=bool)
    if not right.any():
        return 0.0
    hits = np.cumsum(right)
    precision = hits / np.arange(1, len(right) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(envelope[right].sum() / positives)


@dataclass
class Scores:
    """What the metrics need, summed (or gathered) over videos."""

    events: list[str]
    frames: int = 0
    frames_right: int = 0
    event_frames: int = 0
    event_frames_right: int = 0
    idle_frames: int = 0
    idle_frames_right: int = 0
    predicted: int = 0
    true: int = 0
    matched: int = 0
    found: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    positives: dict[str, int] = field(default_factory=dict)

    def add(
        self, truth: list[Segment], predicted: list[Segment], duration: float, fps: float
    ) -> None:
        """One video's segments: `duration` seconds, frames sampled at `fps`."""
        times = frame_times(duration, fps)
        want = frame_labels(truth, self.events, times)
        got = frame_labels(predicted, self.events, times)
        self.frames += len(times)
        self.frames_right += int((want == got).sum())
        self.event_frames += int((want != NONE).sum())
        self.event_frames_right += int(((want == got) & (want != NONE)).sum())
        self.idle_frames += int((want == NONE).sum())
        self.idle_frames_right += int(((want == got) & (want == NONE)).sum())
        self.predicted += len(predicted)
        self.true += len(truth)
        self.matched += match_segments(truth, predicted)
        for event in self.events:
            self.found.setdefault(event, []).extend(detections(truth, predicted, event))
            count = sum(t.event == event for t in truth)
            self.positives[event] = self.positives.get(event, 0) + count

    def summary(self) -> dict[str, float]:
        """frame_acc, frame_acc_events, segment precision / recall / F1 at IoU 0.5, AP@1s per
        event and their mean (NaN where undefined)."""
        precision = _ratio(self.matched, self.predicted)
        recall = _ratio(self.matched, self.true)
        ap = {
            event: average_precision(self.found.get(event, []), self.positives.get(event, 0))
            for event in self.events
        }
        defined = [v for v in ap.values() if not np.isnan(v)]
        return {
            "frame_acc": _ratio(self.frames_right, self.frames),
            "frame_acc_events": _ratio(self.event_frames_right, self.event_frames),
            "frame_acc_no_event": _ratio(self.idle_frames_right, self.idle_frames),
            "segment_precision": precision,
            "segment_recall": recall,
            "segment_f1": _ratio(2 * self.matched, self.predicted + self.true),
            "map_1s": float(np.mean(defined)) if defined else float("nan"),
            **{f"ap_1s_{metric_name(event)}": value for event, value in ap.items()},
            "true_segments": self.true,
            "predicted_segments": self.predicted,
        }


def score(
    videos: Iterable[tuple[list[Segment], list[Segment], float]], events: list[str], fps: float
) -> dict[str, float]:
    """The summary over videos given as (truth, predicted, duration)."""
    scores = Scores(list(events))
    for truth, predicted, duration in videos:
        scores.add(truth, predicted, duration, fps)
    return scores.summary()


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")
