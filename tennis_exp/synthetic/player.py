"""The player, seen from behind: his proportions, and his figure drawn per frame (legs, shorts,
shirt, head, both arms and the racket), anti-aliased, into the patch of the canvas around him."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PLAYER_H = 0.28  # a cartoon player, much taller than life so the swing is visible at 64 px
SHOULDER = (0.15, -0.78)  # racket-side shoulder, in player heights from the feet (y down)
ARM, RACKET = 0.3, 0.32  # arm length and hand-to-racket-head-centre length, player heights


class _Patch(NamedTuple):
    """The canvas around the player in every frame, and its pixels' place on his body."""

    pixels: np.ndarray  # (3, T, H, W), a contiguous copy
    index: tuple  # where it sits in the canvas
    x: np.ndarray  # (T, 1, W) player heights right of the feet
    y: np.ndarray  # (T, H, 1) player heights below the feet
    h: np.ndarray  # (T, 1, 1) the player's height in pixels
    feet_row: np.ndarray  # (T,) the feet in patch pixels
    feet_col: np.ndarray
    size: np.ndarray  # (T,) the player's height in pixels


def draw_player(canvas, fu, fv, size, side, racket_angle, free_angle, stance, colours) -> None:
    """Draw the player seen from behind, feet at (fu, fv) px, `size` px tall, per frame."""
    patch = _patch(canvas, fu, fv, size)
    _draw_body(patch, stance, colours)
    rad = np.radians(_per_frame(racket_angle))
    cos, sin = side * np.cos(rad), -np.sin(rad)
    _draw_arms(patch, side, cos, sin, np.radians(_per_frame(free_angle)), colours)
    _draw_racket(patch, side, cos, sin, colours)
    canvas[patch.index] = patch.pixels


def _patch(canvas, fu, fv, size) -> _Patch:
    """A patch per frame that holds the figure with the racket anywhere around it."""
    length, extent = canvas.shape[1], canvas.shape[2]
    height = min(int(np.ceil(1.7 * size.max())) + 4, extent)
    width = min(int(np.ceil(1.95 * size.max())) + 4, extent)
    top = np.clip(np.round(fv - 1.6 * size).astype(int), 0, extent - height)
    left = np.clip(np.round(fu - width / 2).astype(int), 0, extent - width)
    index = (
        slice(None),
        np.arange(length)[:, None, None],
        (top[:, None] + np.arange(height))[:, :, None],
        (left[:, None] + np.arange(width))[:, None, :],
    )
    # Patch coordinates in player heights, origin at the feet, y down; float32 keeps it fast.
    h = _per_frame(size)
    x = (np.arange(width, dtype=np.float32) + 0.5 + _per_frame(left - fu)) / h
    y = (np.arange(height, dtype=np.float32)[:, None] + 0.5 + _per_frame(top - fv)) / h
    # Fancy indexing leaves the channel axis innermost; contiguous channels blend much faster.
    pixels = np.ascontiguousarray(canvas[index])
    return _Patch(pixels, index, x, y, h, fv - top, fu - left, size)


def _per_frame(values):
    return np.asarray(values, np.float32)[:, None, None]


def _span(low, high, feet, size, limit):
    """Patch pixels covering player coordinates [low, high] in every frame."""
    first = int(np.floor(np.min(feet + low * size))) - 1
    last = int(np.ceil(np.max(feet + high * size))) + 2
    return slice(min(max(first, 0), limit), min(max(last, 0), limit))


def _draw(patch: _Patch, rows, cols, layers) -> None:
    """Paint (shape, colour) layers, shape(x, y) -> alpha, in one region of the patch: fixed
    slices, or per-frame pixel boxes (T, n) for a part that moves around the player."""
    if isinstance(rows, slice):
        xs, ys = patch.x[:, :, cols], patch.y[:, rows, :]
        where = (slice(None), slice(None), rows, cols)
    else:
        xs = np.take_along_axis(patch.x, cols[:, None, :], axis=2)
        ys = np.take_along_axis(patch.y, rows[:, :, None], axis=1)
        where = (slice(None), patch.index[1], rows[:, :, None], cols[:, None, :])
    part = np.ascontiguousarray(patch.pixels[where])
    for shape, colour in layers:
        part += shape(xs, ys) * (np.array(colour, np.float32)[:, None, None, None] - part)
    patch.pixels[where] = part


def _segment(ax, ay, bx, by, half, h):
    """A rounded stroke `half` thick from a to b, as alpha over player coordinates."""

    def alpha(x, y):
        dx, dy = bx - ax, by - ay
        w = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
        return np.clip((half - np.hypot(x - ax - w * dx, y - ay - w * dy)) * h + 0.5, 0, 1)

    return alpha


def _ellipse(cx, cy, rx, ry, h, cos=1.0, sin=0.0):
    def alpha(x, y):
        a, b = ((x - cx) * cos + (y - cy) * sin) / rx, ((y - cy) * cos - (x - cx) * sin) / ry
        return np.clip((1 - np.hypot(a, b)) * min(rx, ry) * h + 0.5, 0, 1)

    return alpha


def _shorts(h):
    def alpha(x, y):
        return np.clip(0.5 - np.maximum(np.abs(x) - 0.15, np.abs(y + 0.5) - 0.08) * h, 0, 1)

    return alpha


def _draw_body(patch: _Patch, stance, colours) -> None:
    h, height, width = patch.h, patch.pixels.shape[2], patch.pixels.shape[3]
    legs = tuple(0.85 * np.array(colours["skin"]))
    _draw(
        patch,
        _span(-1.01, 0.06, patch.feet_row, patch.size, height),
        _span(-0.25, 0.25, patch.feet_col, patch.size, width),
        [
            (_segment(-0.08, -0.46, -stance, 0.0, 0.045, h), legs),
            (_segment(0.08, -0.46, stance, 0.0, 0.045, h), legs),
            (_shorts(h), colours["shorts"]),
            (_ellipse(0.0, -0.68, 0.16, 0.17, h), colours["shirt"]),
            (_ellipse(0.0, -0.91, 0.085, 0.085, h), colours["hair"]),
        ],
    )


def _draw_arms(patch: _Patch, side, cos, sin, free, colours) -> None:
    """The free arm at `free` radians and the racket arm along (cos, sin)."""
    sx, sy = SHOULDER
    h, height, width = patch.h, patch.pixels.shape[2], patch.pixels.shape[3]
    hand_x, hand_y = side * sx + ARM * cos, sy + ARM * sin
    free_x, free_y = -side * (sx + ARM * np.cos(free)), sy - ARM * np.sin(free)
    _draw(
        patch,
        _span(-1.12, -0.44, patch.feet_row, patch.size, height),
        _span(-0.49, 0.49, patch.feet_col, patch.size, width),
        [
            (_segment(-side * sx, sy, free_x, free_y, 0.03, h), colours["skin"]),
            (_segment(side * sx, sy, hand_x, hand_y, 0.03, h), colours["skin"]),
        ],
    )


def _draw_racket(patch: _Patch, side, cos, sin, colours) -> None:
    """Shaft and head (a coloured frame around light strings, the same make for every player),
    drawn in a small box that follows it."""
    sx, sy = SHOULDER
    h, height, width = patch.h, patch.pixels.shape[2], patch.pixels.shape[3]
    hand_x, hand_y = side * sx + ARM * cos, sy + ARM * sin
    reach = ARM + RACKET
    head_x, head_y = side * sx + reach * cos, sy + reach * sin
    box = int(np.ceil(0.52 * patch.size.max())) + 3
    mid_x, mid_y = (side * sx + 0.53 * cos)[:, 0, 0], (sy + 0.53 * sin)[:, 0, 0]
    rows = np.round(patch.feet_row + mid_y * patch.size - box / 2).astype(int)
    cols = np.round(patch.feet_col + mid_x * patch.size - box / 2).astype(int)
    _draw(
        patch,
        np.clip(rows, 0, height - box)[:, None] + np.arange(box),
        np.clip(cols, 0, width - box)[:, None] + np.arange(box),
        [
            (
                _segment(hand_x, hand_y, hand_x + 0.18 * cos, hand_y + 0.18 * sin, 0.018, h),
                (20, 20, 20),
            ),
            (_ellipse(head_x, head_y, 0.14, 0.095, h, cos, sin), colours["racket"]),
            (_ellipse(head_x, head_y, 0.1, 0.06, h, cos, sin), (215, 215, 205)),
        ],
    )
