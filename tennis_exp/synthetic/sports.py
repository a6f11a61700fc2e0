"""What tells the sports apart: the action folders and the events they show, the venues, the
court's lines, the strokes' swings, the flight and the ball's (or shuttle's) look."""

from __future__ import annotations

from typing import Any, NamedTuple

from tennis_exp.config import BADMINTON_ACTIONS, THETIS_ACTIONS, THETIS_EXCLUDED
from tennis_exp.synthetic.flight import ball_path, shuttle_path


class Lines(NamedTuple):
    """A court's lines and net, in court units."""

    half_width: float  # doubles sideline
    singles: float  # singles sideline
    service: float  # service line distance from the net
    net_h: float


_TENNIS_COURT = Lines(0.46, 0.346, 0.538, 0.077)
# 13.4 x 6.1 m, the short service line 1.98 m from the net, the net 1.55 m high.
_BADMINTON_COURT = Lines(0.455, 0.387, 0.296, 0.23)
# Ball radius in player heights: a cartoon ball 5-6 px across at 64 px, as the player is drawn
# taller than life; a 2-3 px ball faded out in the small CNN's stride-2 convolutions.
_BALL_R = 0.09
_SHUTTLE_R = 0.075
_BALL = (215, 240, 60)
_SHUTTLE = (250, 250, 245)

_COURTS = [  # (court, surround, back wall) RGB: hard blue, hard green, clay
    ((40, 85, 150), (60, 120, 80), (25, 60, 45)),
    ((60, 125, 90), (110, 60, 60), (30, 40, 70)),
    ((185, 100, 60), (165, 90, 55), (30, 70, 40)),
]
_HALLS = [  # (court, surround, back wall) RGB: green mat, wooden floor, blue mat, indoors
    ((45, 120, 75), (150, 110, 70), (40, 40, 50)),
    ((190, 140, 90), (120, 85, 55), (55, 45, 40)),
    ((60, 90, 120), (70, 70, 75), (30, 30, 45)),
]

# Racket-arm angle keyframes in degrees (0 = out to the racket side, 90 = straight up), as
# (frames after the contact, angle) and (frames before the next contact, angle). Between shots
# every event rests in the same ready pose (racket low in front, -60), so most single frames
# look alike; the swings are short, overhead for serve and smash. The rally stroke goes low to
# high: the racket drops, meets the ball low in front, rises over the other shoulder and falls
# back to the ready pose down the other side. Unwrapped, so each swing turns the intended way.
_SWING = {
    "Serve": ([(0, 85), (3, 230), (5, 300)], [(5, 300), (3, 370), (1, 420), (0, 445)]),
    "Smash": ([(0, 95), (3, 230), (5, 300)], [(5, 300), (3, 500), (0, 455)]),
    "Rally": ([(0, -30), (2, 45), (4, 120), (7, 300)], [(5, 300), (3, 250), (0, 330)]),
}

# The badminton twin: the serve is underhand (racket low in front, swung up through the
# shuttle), the rally stroke an overhead clear hit standing, the smash as in tennis.
_BADMINTON_SWING = {
    "Serve": ([(0, -40), (2, 10), (4, 40), (6, -60)], [(5, -60), (3, -110), (1, -80), (0, -40)]),
    "Smash": _SWING["Smash"],
    "Rally": ([(0, 105), (3, 210), (5, 290)], [(5, 290), (3, 390), (1, 440), (0, 465)]),
}


class Sport(NamedTuple):
    actions: dict[str, str]  # the action folders the trainer reads, and their events
    looks_like: dict[str, str]  # every folder written (excluded ones too): the event it shows
    venues: list  # (court, surround, back wall) RGB
    lines: Lines
    swing: dict
    flight: Any  # ball_path or shuttle_path
    ball: tuple  # RGB
    ball_r: float  # in player heights


SPORTS = {
    "tennis": Sport(
        THETIS_ACTIONS,
        # Excluded actions still look like the event they resemble: only the folder name
        # excludes them.
        {**THETIS_ACTIONS, **dict(zip(THETIS_EXCLUDED, ["Rally", "Serve", "Serve"], strict=True))},
        _COURTS,
        _TENNIS_COURT,
        _SWING,
        ball_path,
        _BALL,
        _BALL_R,
    ),
    "badminton": Sport(
        BADMINTON_ACTIONS,
        BADMINTON_ACTIONS,
        _HALLS,
        _BADMINTON_COURT,
        _BADMINTON_SWING,
        shuttle_path,
        _SHUTTLE,
        _SHUTTLE_R,
    ),
}
