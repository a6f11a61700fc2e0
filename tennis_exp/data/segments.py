"""Event segments, and their files: what `predict` writes and what its `truth=` reads (a .csv of
start, end, event and optionally confidence, or a .json), and what a synthetic match's truth is."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from tennis_exp.errors import UserError, first_line

COLUMNS = ("start", "end", "event", "confidence")
# A video's truth file beside it, or in a folder of them: <video name><suffix>.
TRUTH_SUFFIXES = (".segments.csv", ".segments.json")


def truth_file(folder: Path, video: Path) -> Path | None:
    """The truth file of `video` in `folder` (<video name>.segments.csv or .json), or None."""
    files = (folder / f"{video.stem}{suffix}" for suffix in TRUTH_SUFFIXES)
    return next((f for f in files if f.is_file()), None)


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the video's first frame
    end: float
    event: str
    confidence: float = 1.0

    @property
    def duration(self) -> float:
        return self.end - self.start


def write_segments_csv(path: Path, segments: list[Segment]) -> Path:
    """A segments .csv: what `read_segments` reads, as truth for instance."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for s in segments:
            writer.writerow([f"{s.start:.3f}", f"{s.end:.3f}", s.event, f"{s.confidence:.4f}"])
    return path


def write_segments_json(path: Path, segments: list[Segment], video: str, duration: float) -> Path:
    """The same as a .json, with the video's name and duration."""
    rounded = [
        {**asdict(s), "start": round(s.start, 3), "end": round(s.end, 3),
         "confidence": round(s.confidence, 4)}
        for s in segments
    ]  # fmt: skip
    content = {"video": video, "duration": round(duration, 3), "segments": rounded}
    path.write_text(json.dumps(content, indent=2) + "\n")
    return path


def read_segments(path: Path, events: list[str]) -> list[Segment]:
    """Segments from a .csv (columns start, end, event and optionally confidence) or a .json
    ({"segments": [...]} or a list of {start, end, event}); a malformed file raises a one-line
    UserError naming it and the place."""
    path = Path(path)
    try:
        rows = _json_rows(path) if path.suffix.lower() == ".json" else _csv_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"truth {path} cannot be read: {first_line(err)}") from None
    return sorted(
        (_segment(row, f"truth {path} {where}", events) for where, row in rows),
        key=lambda s: (s.start, s.end),
    )


def _csv_rows(path: Path) -> list[tuple[str, dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[:3] if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                f"truth {path} lacks the column(s) {', '.join(missing)}: its first line must "
                f"name {', '.join(COLUMNS[:3])} (and optionally confidence)"
            )
        return [(f"line {i}", row) for i, row in enumerate(reader, start=2)]


def _json_rows(path: Path) -> list[tuple[str, dict]]:
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"truth {path} is not valid JSON: {err}") from None
    items = content.get("segments") if isinstance(content, dict) else content
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise UserError(
            f'truth {path} holds no segment list: expected {{"segments": [{{"start": ..., '
            '"end": ..., "event": ...}, ...]}'
        )
    return [(f"segment {i}", item) for i, item in enumerate(items, start=1)]


def _segment(row: dict, where: str, events: list[str]) -> Segment:
    try:
        start, end = float(row["start"]), float(row["end"])
        confidence = float(row.get("confidence") or 1.0)
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"{where}: start and end must be numbers of seconds (got start={row.get('start')!r}, "
            f"end={row.get('end')!r})"
        ) from None
    if not 0 <= start < end:
        raise UserError(f"{where}: expected 0 <= start < end, got start={start:g}, end={end:g}")
    event = row.get("event")
    if event not in events:
        raise UserError(f"{where}: unknown event {event!r}; the model's events: {events}")
    return Segment(start, end, event, confidence)


def check_truth(segments: list[Segment], duration: float | None, frame: float, where: str) -> None:
    """A truth that can label every moment of a video once: segments (sorted, as read_segments
    returns them) that do not overlap and end within its `duration` (one `frame` of slack)."""
    for before, after in zip(segments, segments[1:], strict=False):
        if after.start < before.end:
            raise UserError(
                f"{where}: segments overlap: {_span(before)} and {_span(after)}; a moment holds "
                "one event at most"
            )
    late = [s for s in segments if duration is not None and s.end > duration + frame]
    if late:
        raise UserError(f"{where}: {_span(late[0])} ends after the video's end ({duration:.3f} s)")


def _span(segment: Segment) -> str:
    return f"{segment.event} {segment.start:g}-{segment.end:g} s"
