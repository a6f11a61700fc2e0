"""tennis-exp's Hydra plugin (Hydra takes sweepers from the `hydra_plugins` package only): the
sweeper of `hparams_search=<preset>`, a thin one on Optuna's ask-and-tell API (sweeper.py), its
config `hydra/sweeper=optuna` (config.py), the search space in Hydra's sweep syntax (space.py),
the stored study and the trials it still needs (study.py), Optuna's plots (plots.py)."""
