"""The training objective's class weights: cross-entropy weighted per event as configured."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tennis_exp.data.frames import WindowDataset
from tennis_exp.errors import UserError


def class_weights(setting, train: WindowDataset, events: Sequence[str]) -> list[float] | None:
    """None for `none`; for `balanced`, n / (k * count_c) over the training windows (the users'
    transfer runs' rule: a class half as frequent weighs twice as much); else the given list
    (validated to hold one weight > 0 per event)."""
    if setting == "none":
        return None
    if setting != "balanced":
        return [float(w) for w in setting]
    counts = np.bincount(train.index.labels, minlength=len(events))
    empty = [event for event, n in zip(events, counts, strict=True) if n == 0]
    if empty:
        raise UserError(
            f"training.class_weights=balanced: the training split has no window of "
            f"{', '.join(empty)}, whose weight would be infinite; give the weights as a list "
            "or use training.class_weights=none"
        )
    return [float(counts.sum() / (len(events) * n)) for n in counts]
