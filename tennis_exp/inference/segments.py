"""From window probabilities to event segments (their type and files: data/segments.py).

Timing, the same for the segments, the frame-level scores and the timeline plot: a window spans
its frames, from its first frame's time to its last frame's time plus one frame; it *speaks for*
the stretch of the video nearer to its centre than to any other window's, so consecutive windows
hand over halfway between their centres, the first speaks from the video's start and the last
to its end. With a regular frame rate that is the hop (stride / fps) around each centre.

The rule, with the `predict.*` keys: the probabilities are smoothed by a centred moving average
(`smoothing` seconds wide); a window whose best class is the background (a model trained with
data.background) or whose best smoothed probability is below `min_confidence` (the only way a
model without that class has to find idle play) speaks for no event, else for its best event.
Runs of windows with one event become segments; two segments of one event less than `min_duration`
apart are joined (a flicker or a pause inside a rally), then segments shorter than
`min_duration` are dropped. A segment's confidence is its event's mean smoothed probability
over its windows.
"""

from __future__ import annotations

import numpy as np

from tennis_exp.data.segments import Segment

NONE = -1  # a window that speaks for no event


def speaking_bounds(centres: np.ndarray, duration: float) -> np.ndarray:
    """[W + 1] times: window i speaks for [bounds[i], bounds[i + 1])."""
    centres = np.asarray(centres, dtype=float)
    return np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [duration]])


def smoothing_width(seconds: float, hop: float) -> int:
    """Windows in a moving average `seconds` wide: odd, so it is centred; 1 is none."""
    if hop <= 0:
        return 1
    width = max(1, round(seconds / hop))
    return width if width % 2 else width + 1


def smooth(probabilities: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` windows; at the ends, over the windows there are."""
    probabilities = np.asarray(probabilities, dtype=float)
    if width <= 1 or len(probabilities) == 0:
        return probabilities
    half = width // 2
    padded = np.concatenate([np.zeros((1, probabilities.shape[1])), probabilities]).cumsum(0)
    index = np.arange(len(probabilities))
    low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, len(probabilities))
    return (padded[high] - padded[low]) / (high - low)[:, None]


def min_confidence(setting: float | None, background: int | None) -> float:
    """predict.min_confidence; null: none for a model with a background class, else 0.5."""
    if setting is not None:
        return setting
    return 0.0 if background is not None else 0.5


def window_labels(
    smoothed: np.ndarray, min_confidence: float, background: int | None = None
) -> np.ndarray:
    """Each window's event index, or NONE where its best class is `background` (the model's
    no-event class, if it has one) or its best probability is below min_confidence."""
    smoothed = np.asarray(smoothed, dtype=float)
    if len(smoothed) == 0:
        return np.zeros(0, dtype=int)
    best = smoothed.argmax(1)
    no_event = smoothed.max(1) < min_confidence
    if background is not None:
        no_event |= best == background
    return np.where(no_event, NONE, best)


def runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(label, first, last) for every run of equal labels, NONE runs included."""
    found: list[tuple[int, int, int]] = []
    for i, label in enumerate(np.asarray(labels).tolist()):
        if found and found[-1][0] == label:
            found[-1] = (label, found[-1][1], i)
        else:
            found.append((label, i, i))
    return found


def event_runs(labels: np.ndarray, bounds: np.ndarray, min_duration: float) -> list[tuple]:
    """The rule's runs of event windows (label, first, last): gaps shorter than min_duration
    between two runs of one event closed, then runs shorter than min_duration dropped."""
    joined: list[tuple[int, int, int]] = []
    for label, first, last in runs(labels):
        if label == NONE:
            continue
        same = next((i for i in range(len(joined) - 1, -1, -1) if joined[i][0] == label), None)
        if same is not None and bounds[first] - bounds[joined[same][2] + 1] < min_duration:
            # Everything in between (no event, or another event's short runs) joins it.
            first = joined[same][1]
            del joined[same:]
        joined.append((label, first, last))
    return [r for r in joined if bounds[r[2] + 1] - bounds[r[1]] >= min_duration]


def to_segments(
    smoothed: np.ndarray,
    bounds: np.ndarray,
    events: list[str],
    min_confidence: float,
    min_duration: float,
    background: int | None = None,
) -> list[Segment]:
    """The module's rule: smoothed window probabilities [W, C] and their speaking bounds
    [W + 1] -> segments, in time order."""
    labels = window_labels(smoothed, min_confidence, background)
    return [
        Segment(
            float(bounds[first]),
            float(bounds[last + 1]),
            events[label],
            float(np.mean(smoothed[first : last + 1, label])),
        )
        for label, first, last in event_runs(labels, bounds, min_duration)
    ]
