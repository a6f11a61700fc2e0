"""The play of one video: where the player stands, how he swings and where the ball flies, frame
by frame. The player shoots one event over and over, a contact every 12-16 frames.

A volley is a rally stroke played backwards (from a spot a little nearer the net), so the same
frames show either and their order tells the two apart: the ball meets the racket before it
bounces instead of after, the racket swings high to low instead of low to high, and the player
closes in on the net instead of being pushed back from it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tennis_exp.synthetic.camera import Camera
from tennis_exp.synthetic.player import ARM, PLAYER_H, RACKET, SHOULDER
from tennis_exp.synthetic.sports import Sport

PLAYED_BACKWARDS = {"Net Play": "Rally"}

# Per event: player depth range (overlapping, so position alone is a weak cue; wider ranges
# made the small preset unlearnable), frames of the outgoing ball and of the incoming ball.
EVENT_TIMING = {
    "Serve": {"depth": (-0.1, 0.3), "n_out": (4, 5), "n_in": (7, 10)},
    "Smash": {"depth": (0.05, 0.45), "n_out": (3, 4), "n_in": (8, 10)},
    "Rally": {"depth": (-0.1, 0.5), "n_out": (5, 7), "n_in": (7, 9)},
}
# Top speed of the rally player's retreat, in court units a frame (a volleyer's approach).
_DRIFT = 0.02
# The arrays cover the video plus the shots just before and after it (row = frame + _PAD).
_PAD = 20


class Body(NamedTuple):
    """The player per frame: his feet on the court, his height in image fractions, and how
    far his feet are off the ground in player heights."""

    x: np.ndarray
    d: np.ndarray
    size: np.ndarray
    lift: np.ndarray


class Play(NamedTuple):
    """Everything that moves, per frame of the video."""

    body: Body
    racket_angle: np.ndarray  # degrees, as in sports.py's swings
    free_angle: np.ndarray
    ball: np.ndarray  # (T, 3) world position, NaN while out of play


def simulate(
    event: str,
    side: float,
    length: int,
    spot: tuple[float, float],
    cam: Camera,
    sport: Sport,
    rng: np.random.Generator,
    backwards: bool,
) -> Play:
    """The play of `event` (Net Play already mapped to the Rally it plays backwards) by a player
    holding the racket on `side` (1 right, -1 left) around `spot` (x, d)."""
    rows = np.arange(length + 2 * _PAD + 20)
    x, d = _positions(event, length, spot, rows, rng)
    size = cam.f * PLAYER_H / (d - cam.d)  # image fractions
    # Contacts every 12-16 frames, so any 16-frame window holds at least one.
    contacts = [_PAD - int(rng.integers(0, 16))]
    while contacts[-1] < length + 2 * _PAD:
        contacts.append(contacts[-1] + int(rng.integers(12, 17)))
    body = Body(x, d, size, _lift(event, contacts, len(rows), rng))
    racket_angle, free_angle, ball = _strokes(event, side, contacts, cam, body, sport, rng)
    keep = slice(_PAD + length - 1, _PAD - 1, -1) if backwards else slice(_PAD, _PAD + length)
    return Play(
        Body(*(part[keep] for part in body)), racket_angle[keep], free_angle[keep], ball[keep]
    )


def _positions(event, length, spot, rows, rng):
    """The feet's court position per row: a slow sway around his spot, across more than in
    depth, where the rally player steadily retreats to it (at most 0.3 court units over the
    video, from where he still looks large)."""
    x0, d0 = spot
    sway = rng.uniform(0.01, 0.05), rng.uniform(0.005, 0.02)
    freq, phase = rng.uniform(0.05, 0.15, 2), rng.uniform(0, 7, 2)
    drift = min(_DRIFT * rng.uniform(0.6, 1), 0.3 / length) if event == "Rally" else 0.0
    x = x0 + sway[0] * np.sin(freq[0] * rows + phase[0])
    d = d0 + sway[1] * np.sin(freq[1] * rows + phase[1]) - drift * (rows - _PAD - length + 1)
    return x, d


def _lift(event, contacts, rows, rng) -> np.ndarray:
    """Feet above the ground, in player heights: the smash is hit jumping (a scissor kick), a
    whole-body motion that one frame cannot tell from a higher framing."""
    lift = np.zeros(rows)
    if event == "Smash":
        k = np.arange(-3, 4)
        for c in contacts:
            lift[c + k] = rng.uniform(0.12, 0.2) * (1 - (k / 3.5) ** 2)
    return lift


def _limb(cam: Camera, body: Body, rows, angle, arm_side, reach, ahead):
    """World point `reach` player heights along an arm at `angle` degrees, `ahead` of him."""
    u, v = cam.project(body.x[rows], body.d[rows], 0.0)
    rad = np.radians(angle)
    u = u + arm_side * (SHOULDER[0] + reach * np.cos(rad)) * body.size[rows]
    v = v + (SHOULDER[1] - body.lift[rows] - reach * np.sin(rad)) * body.size[rows]
    d = body.d[rows] + ahead
    x, h = cam.unproject(u, v, d)
    return np.stack(np.broadcast_arrays(x, d, h), axis=-1)


def _style(swing, rng):
    """The event's swing keyframes with this video's style: the key poses turned a little; the
    contact and ready poses keep one turn each, as they end one swing and start the next."""
    after, before = swing
    shift = rng.uniform(-15, 15, len(after) + len(before) - 2)
    shift_before = [shift[len(after) - 1], *shift[len(after) :], shift[0]]
    after = [(k, a + d) for (k, a), d in zip(after, shift, strict=False)]
    before = [(k, a + d) for (k, a), d in zip(before, shift_before, strict=True)]
    return after, before


def _strokes(event, side, contacts, cam, body, sport, rng):
    """Racket and free arm angles and the ball's world position over every row, shot by shot."""
    timing = EVENT_TIMING[event]
    after, before = _style(sport.swing[event], rng)
    racket_angle = np.zeros(len(body.x))
    free_angle = np.zeros(len(body.x))
    ball = np.full((len(body.x), 3), np.nan)
    hit = _limb(cam, body, contacts[0], after[0][1], side, ARM + RACKET, 0.03)
    for c_from, c_to in zip(contacts[:-1], contacts[1:], strict=False):
        n = c_to - c_from
        n_out = int(rng.integers(timing["n_out"][0], timing["n_out"][1] + 1))
        n_in = min(int(rng.integers(timing["n_in"][0], timing["n_in"][1] + 1)), n - n_out - 1)
        tau = np.arange(n)
        rows = c_from + tau
        keys = after + [(n - k, a) for k, a in before]
        racket_angle[rows] = np.interp(tau, *zip(*keys, strict=True))
        nxt = _limb(cam, body, c_to, after[0][1], side, ARM + RACKET, 0.03)

        def hand(tau, angle, rows=rows):
            return _limb(cam, body, rows[tau], angle, -side, ARM, 0.01)

        path, free = sport.flight(event, cam, n, n_out, n_in, hit, nxt, hand, rng)
        free_angle[rows] = free
        if event == "Serve":
            # Until the toss, the ball rests in the tossing hand.
            hold = np.isnan(path[:, 0]) & (tau >= n_out)
            path[hold] = hand(hold, free[hold])
        ball[rows] = path
        hit = nxt
    return racket_angle, free_angle, ball
