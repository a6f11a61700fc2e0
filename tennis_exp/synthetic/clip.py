"""One clip of the twin, rendered: the court, the ball behind the player, the player, the ball
in front of him, then what a camera adds (shake, mirroring, an occluder, lighting, flicker and
noise). Each clip has its own random stream, so any process renders the same frames."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tennis_exp.synthetic.camera import Camera, framing
from tennis_exp.synthetic.cast import CLOTHES, PLAYERS, Cast, cast_of
from tennis_exp.synthetic.court import draw_court
from tennis_exp.synthetic.motion import EVENT_TIMING, PLAYED_BACKWARDS, Play, simulate
from tennis_exp.synthetic.player import PLAYER_H, draw_player

_PAN = 3  # pixels an idle view pans at most, each way


class Video(NamedTuple):
    """One planned clip: its folder name, THETIS action folder and frame count."""

    name: str
    action: str
    length: int


def render_clip(
    video: Video, split_index: int, index: int, seed: int, image_size: int, sport: str = "tennis"
):
    """The frames (T, S, S, 3) uint8 of the `index`-th planned video of a split, the same
    whatever process renders it (each video has its own random stream)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, split_index, index]))
    cast = cast_of(seed, sport)
    event = cast.sport.looks_like[video.action]
    frames, _ = render_video(event, video.action, video.length, image_size, rng, cast)
    return frames


def render_idle(
    video: Video, split_index: int, index: int, seed: int, image_size: int, sport: str = "tennis"
):
    """An idle clip of the twin (data.background), as render_clip: the scene of a clip of a
    random stroke, before it, held while the view pans (idle_frames), as a match's idle play."""
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, split_index, index]))
    cast = cast_of(seed, sport)
    action = str(rng.choice(list(cast.sport.actions)))
    frames, _ = render_video(
        cast.sport.actions[action], action, video.length, image_size, rng, cast
    )
    return idle_frames(frames[0], video.length, rng)


def idle_frames(frame: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """`frame` held for `length` frames, the view panning slowly, with noise and flicker."""
    size = frame.shape[0]
    padded = np.pad(frame, ((_PAN, _PAN), (_PAN, _PAN), (0, 0)), mode="edge").astype(np.float32)
    target = rng.integers(-_PAN, _PAN + 1, 2)
    out = np.empty((length, *frame.shape), np.uint8)
    for t in range(length):
        dy, dx = np.round(target * t / max(length - 1, 1)).astype(int) + _PAN
        view = padded[dy : dy + size, dx : dx + size]
        flicker = 1 + 0.02 * rng.standard_normal()
        noise = rng.uniform(-6, 6, view.shape).astype(np.float32)
        out[t] = np.clip(view * flicker + noise, 0, 255).astype(np.uint8)
    return out


def render_video(
    event: str, action: str, length: int, image_size: int, rng: np.random.Generator, cast: Cast
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, S, S, 3) uint8 and the ball's pixel centre per frame (T, 2), NaN when hidden."""
    backwards = event in PLAYED_BACKWARDS
    event = PLAYED_BACKWARDS.get(event, event)
    side = -1.0 if action.startswith("backhand") else 1.0
    # A volley is played nearer the net: where a frame is taken is a weak cue of its own.
    x0 = rng.uniform(-0.3, 0.3)
    d0 = rng.uniform(*EVENT_TIMING[event]["depth"]) + (0.1 if backwards else 0.0)
    cam = framing(x0, d0, rng)
    shake = max(1, round(image_size / 64))
    margin = 2 * shake + 1
    venue = cast.venues[rng.integers(len(cast.venues))]
    court = draw_court(cam, image_size, margin, venue, cast.sport, rng)
    play = simulate(event, side, length, (x0, d0), cam, cast.sport, rng, backwards)
    canvas, ball, visible = _draw_scene(court, play, cam, side, image_size, margin, cast, rng)
    return _film(canvas, ball, visible, image_size, margin, shake, rng)


def _draw_scene(court, play: Play, cam: Camera, side, s_img, margin, cast: Cast, rng):
    """Every frame of the scene on a canvas a margin wider than the image (3, T, C, C), the
    ball's pixel centre on it (T, 2) and whether it is in play (T,)."""
    length, body, sport = len(play.ball), play.body, cast.sport
    # Channel-first (3, T, H, W): blends over a trailing axis of 3 are several times slower.
    canvas = np.broadcast_to(court[:, None], (3, length, *court.shape[1:])).copy()
    bu, bv = cam.project(play.ball[:, 0], play.ball[:, 1], play.ball[:, 2])
    visible = ~np.isnan(bu)
    bu, bv = np.nan_to_num(bu) * s_img + margin, np.nan_to_num(bv) * s_img + margin
    depth = np.where(visible, play.ball[:, 1], body.d)
    # At least 3 px across (at 64 px) when far away.
    radius = np.maximum(1.5 * s_img / 64, sport.ball_r * cam.f * PLAYER_H * s_img / (depth - cam.d))
    behind = visible & (depth > body.d + 0.02)
    draw_ball(canvas, bu, bv, radius, behind, sport.ball)
    fu, fv = cam.project(body.x, body.d, 0.0)
    colours = cast.players[rng.integers(PLAYERS)]
    draw_player(
        canvas,
        fu * s_img + margin,
        (fv - body.lift * body.size) * s_img + margin,
        body.size * s_img,
        side,
        play.racket_angle,
        play.free_angle,
        rng.uniform(0.1, 0.18),
        colours,
    )
    draw_ball(canvas, bu, bv, radius, visible & ~behind, sport.ball)
    return canvas, np.stack([bu, bv], axis=1), visible


def draw_ball(canvas, cu, cv, radius, mask, colour) -> None:
    """Draw an anti-aliased disc per frame (where `mask`) through small per-frame patches."""
    if not mask.any():
        return
    frames = np.flatnonzero(mask)
    size = 2 * int(np.ceil(radius.max())) + 3
    limit = canvas.shape[2] - size
    top = np.clip(np.floor(cv[frames]).astype(int) - size // 2, 0, limit)
    left = np.clip(np.floor(cu[frames]).astype(int) - size // 2, 0, limit)
    grid = np.arange(size)
    rows = (top[:, None] + grid)[:, :, None]
    cols = (left[:, None] + grid)[:, None, :]
    dist = np.hypot(rows + 0.5 - cv[frames, None, None], cols + 0.5 - cu[frames, None, None])
    alpha = np.clip(radius[frames, None, None] + 0.5 - dist, 0, 1)
    index = (slice(None), frames[:, None, None], rows, cols)
    patch = canvas[index]
    canvas[index] = patch + alpha * (np.array(colour, np.float32)[:, None, None, None] - patch)


def _film(canvas, ball, visible, s_img, margin, shake, rng) -> tuple[np.ndarray, np.ndarray]:
    """What the camera makes of the scene: frames (T, S, S, 3) uint8 and the ball's centre in
    them (T, 2), NaN where it is out of play or out of the image."""
    length = canvas.shape[1]
    # Camera shake: each frame is cut from the canvas at a slightly different offset.
    dy, dx = rng.choice([-2, -1, 0, 1, 2], p=[0.05, 0.2, 0.5, 0.2, 0.05], size=(2, length))
    dy, dx = margin + dy * shake, margin + dx * shake
    frames = np.stack(
        [
            canvas[:, t, y : y + s_img, x : x + s_img]
            for t, (y, x) in enumerate(zip(dy, dx, strict=True))
        ],
        axis=1,
    )
    centre = np.stack([ball[:, 0] - dx, ball[:, 1] - dy], axis=1)
    if rng.random() < 0.5:
        frames = frames[..., ::-1]
        centre[:, 0] = s_img - centre[:, 0]
    centre[~visible | ((centre < 0) | (centre >= s_img)).any(axis=1)] = np.nan
    _occlude(frames, rng)
    # Lighting (gain per video and channel), flicker per frame, pixel noise. Each step rebinds
    # `frames`, so the array before it is freed at once: holding it costs fresh pages.
    gain = (rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, (3, 1, 1, 1))).astype(np.float32)
    flicker = 1 + 0.02 * rng.standard_normal((length, 1, 1), dtype=np.float32)
    frames = frames * (gain * flicker) + np.float32(rng.uniform(-10, 10))
    # Uniform pixel noise (std 2-7) from random bytes: a normal draw would double the run time.
    noise = np.frombuffer(rng.bytes(frames.size), np.int8).reshape(frames.shape)
    frames += noise * np.float32(rng.uniform(2, 7) / 74)
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frames.transpose(1, 2, 3, 0)), centre


def _occlude(frames: np.ndarray, rng: np.random.Generator) -> None:
    """Random opaque rectangles (a passer-by, a flag) over the image for a few frames."""
    length, s_img = frames.shape[1], frames.shape[2]
    # At most one, mid-sized: more and larger ones hid the ball for much of a short clip.
    for _ in range(int(rng.choice([0, 0, 0, 1]))):
        start = int(rng.integers(length))
        stop = start + int(rng.integers(2, 6))
        h, w = (rng.uniform(0.15, 0.3, 2) * s_img).astype(int)
        top, left = int(rng.integers(s_img - h)), int(rng.integers(s_img - w))
        colour = np.array(CLOTHES[rng.integers(len(CLOTHES))], np.float32)
        frames[:, start:stop, top : top + h, left : left + w] = colour[:, None, None, None]
