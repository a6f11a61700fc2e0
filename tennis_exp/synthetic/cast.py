"""The cast: as in THETIS, a few players on a few courts perform every action, so appearance is
shared across events and a model cannot learn events by remembering what each video looks like.
The colours they are drawn from, and the cast a seed picks."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from tennis_exp.synthetic.sports import SPORTS, Sport

CLOTHES = [
    (240, 240, 240),
    (200, 40, 40),
    (30, 40, 120),
    (30, 30, 30),
    (230, 120, 40),
    (120, 40, 140),
    (40, 150, 160),
    (160, 160, 160),
]
_RACKETS = [(200, 30, 30), (20, 20, 20), (30, 60, 200), (240, 120, 20)]
_SKINS = [(235, 195, 160), (200, 150, 110), (140, 95, 65), (90, 60, 40)]
_HAIR = [(30, 25, 20), (90, 60, 30), (200, 170, 100), (60, 60, 60)]
PLAYERS = 8


class Cast(NamedTuple):
    players: list[dict[str, tuple]]  # colour of each body part
    venues: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # court, surround, back wall
    sport: Sport


@functools.lru_cache(maxsize=4)
def cast_of(seed: int, sport: str = "tennis") -> Cast:
    """The players and venues of the twin made with `seed`: the same for all its videos."""
    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, 0xCA57]))
    players = [
        {
            part: palette[rng.integers(len(palette))]
            for part, palette in [
                ("shirt", CLOTHES),
                ("shorts", CLOTHES),
                ("skin", _SKINS),
                ("hair", _HAIR),
                ("racket", _RACKETS),
            ]
        }
        for _ in range(PLAYERS)
    ]
    venues = [
        tuple(
            np.array(c, np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32) for c in court
        )
        for court in SPORTS[sport].venues
    ]
    return Cast(players, venues, SPORTS[sport])
