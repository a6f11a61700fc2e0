"""Ball and shuttle flight: where the ball (or shuttle) is in the world, frame by frame, from one
contact of the player's racket to the next, and the free arm that tosses or points at it."""

from __future__ import annotations

import numpy as np

from tennis_exp.synthetic.player import PLAYER_H


def _lerp(a, b, w):
    return a + (b - a) * w


def _arc(w, top):
    """A parabola over w in [0, 1], 0 at both ends and `top` in the middle."""
    return top * 4 * w * (1 - w)


def _phases(n: int, n_out: int, n_in: int):
    """Frames since a contact (n), the outgoing ones (mask, progress in [0, 1) as a column)
    and the incoming ones before the next contact (mask, progress in [0, 1))."""
    tau = np.arange(n)
    out = tau < n_out
    inc = n - tau <= n_in
    return tau, out, (tau[out] / n_out)[:, None], inc, (1 - (n - tau[inc]) / n_in)[:, None]


def ball_path(event, cam, n, n_out, n_in, hit, nxt, hand, rng):
    """World positions (n, 3) of the ball from one contact to the frame before the next (NaN
    while out of play) and the free arm's angle over those frames; `hand(tau, angle)` is where
    the free hand is tau frames after the contact."""
    return _BALL_FLIGHTS[event](cam, n, n_out, n_in, hit, nxt, hand, rng)


def _ball_serve(cam, n, n_out, n_in, hit, nxt, hand, rng):
    tau, out, s, inc, r = _phases(n, n_out, n_in)
    path = np.full((n, 3), np.nan)
    h = nxt[2]
    # Out: fast and flat into the far service box.
    target = np.array([hit[0] + rng.uniform(-0.25, 0.25), rng.uniform(1.3, 1.55), 0.0])
    path[out] = _lerp(hit, target, s)
    # In: the toss rises from the hand, hangs at the top, falls onto the racket.
    apex_at = rng.uniform(0.45, 0.6)
    start = hand(n - n_in, -80.0)
    apex_h = h + PLAYER_H * rng.uniform(0.15, 0.35)
    w = r[:, 0]
    rise = apex_h - (apex_h - start[2]) * (1 - w / apex_at) ** 2
    fall = apex_h - (apex_h - h) * ((w - apex_at) / (1 - apex_at)) ** 2
    path[inc] = _lerp(start, nxt, np.minimum(w / apex_at, 1)[:, None])
    path[inc, 2] = np.where(w < apex_at, rise, fall)
    # Tossing arm: down holding the ball, up with the toss, down after the hit.
    free = np.interp(tau, [0, n_out, n - n_in, n - n_in * (1 - apex_at), n], [60, -70, -80, 85, 60])
    return path, free


def _ball_smash(cam, n, n_out, n_in, hit, nxt, hand, rng):
    tau, out, s, inc, r = _phases(n, n_out, n_in)
    path = np.full((n, 3), np.nan)
    x, d, h = nxt
    # Out: driven down steeply into the far court.
    target = np.array([hit[0] + rng.uniform(-0.3, 0.3), hit[1] + rng.uniform(0.5, 0.9), 0.0])
    path[out] = _lerp(hit, target, s)
    # In: a lob that drops steeply from the top of the image onto the racket, in sight all
    # the way: entering from above the image, it showed too little to tell from a toss.
    z = d + rng.uniform(0.3, 0.7)
    start = np.array([x + rng.uniform(-0.1, 0.1), z, 0.0])
    start[2] = cam.height + (cam.cy - rng.uniform(0.02, 0.1)) * (z - cam.d) / cam.f
    fall = 0.35 * r + 0.65 * r**2
    path[inc] = _lerp(start, nxt, r)
    path[inc, 2] = _lerp(start[2], h, fall[:, 0])
    # Free arm points up at the lob.
    free = np.interp(tau, [0, 3, n - n_in, n], [60, -60, 70, 60])
    return path, free


def _ball_rally(cam, n, n_out, n_in, hit, nxt, hand, rng):
    tau, out, s, inc, r = _phases(n, n_out, n_in)
    path = np.full((n, 3), np.nan)
    x, d = nxt[:2]
    # Out: a long arc back over the net.
    target = np.array(
        [hit[0] + rng.uniform(-0.35, 0.35), rng.uniform(1.6, 2.0), rng.uniform(0.08, 0.14)]
    )
    path[out] = _lerp(hit, target, s)
    path[out, 2] += _arc(s[:, 0], rng.uniform(0.05, 0.12))
    # In: comes over the net, bounces in front of the player (a V in height), rises to him.
    start = np.array([x + rng.uniform(-0.35, 0.35), rng.uniform(1.5, 1.9), rng.uniform(0.1, 0.16)])
    at = rng.uniform(0.5, 0.65)
    bounce = np.array([_lerp(start[0], x, at), d + rng.uniform(0.25, 0.5), 0.0])
    w1 = np.clip(r / at, 0, 1)
    w2 = np.clip((r - at) / (1 - at), 0, 1)
    first = _lerp(start, bounce, w1)
    first[:, 2] += _arc(w1[:, 0], rng.uniform(0.02, 0.06))
    second = _lerp(bounce, nxt, w2)
    second[:, 2] += _arc(w2[:, 0], rng.uniform(0.02, 0.05))
    path[inc] = np.where(r < at, first, second)
    # Free arm pointing at the coming ball, as coaches teach (an arm up is not overhead-only),
    # then swung across with the stroke.
    free = np.interp(tau, [0, 4, n - n_in, n - 2, n], [-160, -120, 45, 20, -160])
    return path, free


_BALL_FLIGHTS = {"Serve": _ball_serve, "Smash": _ball_smash, "Rally": _ball_rally}


def shuttle_path(event, cam, n, n_out, n_in, hit, nxt, hand, rng):
    """As `ball_path`, for a shuttle: it leaves fast and slows (drag), falls at a steady speed
    at the end of a high shot, and never bounces."""
    tau, out, s, inc, r = _phases(n, n_out, n_in)
    path = np.full((n, 3), np.nan)
    slowing = 1 - (1 - s) ** 2.5  # share of the outgoing flight covered
    x, d, h = nxt
    if event == "Serve":
        # Out: a high serve, rising steeply towards the far back line.
        target = np.array([hit[0] + rng.uniform(-0.2, 0.2), rng.uniform(1.6, 1.9), h + 0.5])
        path[out] = _lerp(hit, target, slowing)
        path[out, 2] += _arc(slowing[:, 0], rng.uniform(0.05, 0.15))
        # In: held out in front until dropped, then falling onto the racket low in front.
        drop = rng.uniform(0.45, 0.6)
        start = hand(n - n_in, -20.0)
        falling = r[:, 0] >= drop
        w = ((r[falling] - drop) / (1 - drop)) ** 2
        path[np.flatnonzero(inc)[falling]] = _lerp(start, nxt, w)
        # Free arm: down after the hit, out in front holding the shuttle, down once it is let go.
        free = np.interp(
            tau, [0, n_out, n - n_in, n - n_in * (1 - drop), n], [-70, -70, -20, -20, -70]
        )
        return path, free
    if event == "Smash":
        # Out: straight down into the far court, fast.
        target = np.array([hit[0] + rng.uniform(-0.3, 0.3), hit[1] + rng.uniform(0.4, 0.7), 0.0])
        path[out] = _lerp(hit, target, 1 - (1 - s) ** 1.5)
        z = d + rng.uniform(0.2, 0.5)
    else:  # Rally: a clear, out high over the far court
        target = np.array([hit[0] + rng.uniform(-0.3, 0.3), rng.uniform(1.7, 2.0), h + 0.7])
        path[out] = _lerp(hit, target, slowing)
        path[out, 2] += _arc(slowing[:, 0], rng.uniform(0.05, 0.1))
        z = d + rng.uniform(0.5, 0.9)
    # In: a high shot from the far side, falling from the top of the image at a steady speed as
    # its way across slows.
    start = np.array([x + rng.uniform(-0.15, 0.15), z, 0.0])
    start[2] = cam.height + (cam.cy - rng.uniform(0.02, 0.1)) * (z - cam.d) / cam.f
    path[inc] = _lerp(start, nxt, 1 - (1 - r) ** 2)
    path[inc, 2] = _lerp(start[2], h, r[:, 0])
    # Free arm points up at the shuttle.
    free = np.interp(tau, [0, 3, n - n_in, n], [60, -60, 70, 60])
    return path, free
