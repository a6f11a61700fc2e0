"""The camera. World units: the court's half length is 1; x across the court, d from the near
baseline (net at d=1, far baseline at d=2), h above the ground. As in THETIS, a fixed camera
stands behind the player at chest height and frames him large; image coordinates u (right) and
v (down) are fractions of the image size."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tennis_exp.synthetic.player import PLAYER_H


class Camera(NamedTuple):
    f: float  # focal length, in image sizes
    cy: float  # horizon row
    x: float  # position on the court
    d: float
    height: float

    def project(self, x, d, h):
        z = d - self.d
        return 0.5 + self.f * (x - self.x) / z, self.cy + self.f * (self.height - h) / z

    def unproject(self, u, v, d):
        z = d - self.d
        return self.x + (u - 0.5) * z / self.f, self.height - (v - self.cy) * z / self.f


def framing(x0: float, d0: float, rng: np.random.Generator) -> Camera:
    """The camera of one video, the player standing at (x0, d0): his height in the image (the
    scale jitter), his feet's row, his left-right place and the camera's height are drawn; the
    camera's court position follows from them."""
    tall, feet, across, eye = (
        rng.uniform(0.44, 0.52),
        rng.uniform(0.86, 0.91),
        rng.uniform(0.44, 0.56),
        rng.uniform(0.18, 0.22),
    )
    f = 1.2
    distance = f * PLAYER_H / tall
    return Camera(
        f=f,
        cy=feet - f * eye / distance,
        x=x0 - (across - 0.5) * distance / f,
        d=d0 - distance,
        height=eye,
    )
