"""The simulator behind the synthetic twin of the users' THETIS-derived dataset, for runs
without the real videos (its dataset lifecycle: tennis_exp/data/synthetic.py).

Each video shows one player from behind, framed large as in THETIS, repeating shots of one
event: the event shows in the ball's path and the swing over time, while a shared ready pose and
the nuisances (overlapping court positions, scale, mirroring, camera shake, lighting, noise,
occluders, a stray ball) keep any single frame a weak cue. A volley is a rally stroke played
backwards, a little nearer the net: the same frames in another order, so that a model that does
not see their order has only the player's spot to tell Net Play from Rally.

The badminton twin has the users' stroke folders: a white shuttle that slows in flight and never
bounces, a high net and short service lines on an indoor court, an underhand serve and overhead
clears; the same four events, the same window counts.

plan.py (which videos a preset holds), sports.py, cast.py, camera.py, court.py, player.py,
flight.py (ball and shuttle), motion.py (the play of one video), clip.py (one clip rendered),
generate.py (the frame folders), videos.py (raw videos, `python -m tennis_exp.synthetic.videos`),
match.py (long matches with their truth, `python -m tennis_exp.synthetic.match`).
"""
