"""The court seen by the camera: surface, surround, back wall, lines, net, a stray ball and the
light, rendered once per video as the background of every frame."""

from __future__ import annotations

import numpy as np

from tennis_exp.synthetic.camera import Camera
from tennis_exp.synthetic.player import PLAYER_H
from tennis_exp.synthetic.sports import Sport


def draw_court(
    cam: Camera, s_img: int, margin: int, venue: tuple, sport: Sport, rng: np.random.Generator
) -> np.ndarray:
    """Background (3, C, C) float32: court, lines, net and back wall, with lighting gradient."""
    court, surround, wall = venue
    half_width = sport.lines.half_width
    size = s_img + 2 * margin
    pix = (np.arange(size, dtype=np.float32) - margin + 0.5) / s_img
    u, v = pix[None, :], pix[:, None]
    below = np.maximum(v - cam.cy, 1e-3)
    z = cam.f * cam.height / below
    d = z + cam.d
    x = cam.x + (u - 0.5) * z / cam.f
    wall_v = cam.project(0.0, 2.6, 0.0)[1]
    inside = (np.abs(x) <= half_width) & (d >= 0) & (d <= 2)
    image = np.where(inside[..., None], court, surround)
    image = np.where((v < wall_v)[..., None], wall, image)
    alpha = _lines(sport.lines, d, x, cam.f * cam.height * s_img / z**2, cam.f * s_img / z)
    alpha *= v > wall_v
    image += alpha[..., None] * (np.float32(235) - image)
    _net(image, cam, s_img, u, v, sport.lines)
    # Stray ball lying on the court: the yellow disc alone does not locate the ball in play.
    if rng.random() < 0.25:
        spot = rng.uniform(-0.6, 0.6), rng.uniform(cam.d + 0.4, 1.9)
        su, sv = cam.project(*spot, 0.0)
        r = np.hypot((u - su) * s_img, (v - sv) * s_img)
        disc = np.clip(sport.ball_r * cam.f * PLAYER_H * s_img / (spot[1] - cam.d) + 0.5 - r, 0, 1)
        image += disc[..., None] * (np.array(sport.ball, np.float32) - image)
    # Sun and shade: a random linear lighting gradient.
    slope = rng.uniform(-0.25, 0.25, 2)
    image *= (1 + slope[0] * (u - 0.5) + slope[1] * (v - 0.5))[..., None]
    return np.ascontiguousarray(image.transpose(2, 0, 1), np.float32)


def _lines(lines, d, x, px_per_d, px_per_x) -> np.ndarray:
    """The lines' alpha per pixel: the distance to each line converted to pixels at that depth,
    anti-aliased."""
    half_width, singles, service = lines.half_width, lines.singles, lines.service
    width = 0.3
    alpha = np.zeros(x.shape, np.float32)
    for d_line, half in [
        (0, half_width),
        (2, half_width),
        (1 - service, singles),
        (1 + service, singles),
    ]:
        near = np.clip(width + 0.5 - np.abs(d - d_line) * px_per_d, 0, 1)
        alpha = np.maximum(alpha, near * (np.abs(x) <= half))
    for x_line, (d_lo, d_hi) in [
        (-half_width, (0, 2)),
        (half_width, (0, 2)),
        (-singles, (0, 2)),
        (singles, (0, 2)),
        (0, (1 - service, 1 + service)),
    ]:
        near = np.clip(width + 0.5 - np.abs(x - x_line) * px_per_x, 0, 1)
        alpha = np.maximum(alpha, near * ((d >= d_lo) & (d <= d_hi)))
    return alpha


def _net(image, cam: Camera, s_img: int, u, v, lines) -> None:
    """A dark see-through band across the court with a white tape on top."""
    net_top, net_bottom = cam.project(0.0, 1.0, lines.net_h)[1], cam.project(0.0, 1.0, 0.0)[1]
    span = np.abs(cam.unproject(u, v, 1.0)[0]) <= lines.half_width + 0.08
    band = np.clip(np.minimum(v - net_top, net_bottom - v) * s_img + 0.5, 0, 1) * span
    image += 0.6 * band[..., None] * (np.float32(25) - image)
    tape = np.clip(1 - np.abs(v - net_top) * s_img, 0, 1) * span
    image += 0.8 * tape[..., None] * (np.float32(240) - image)
