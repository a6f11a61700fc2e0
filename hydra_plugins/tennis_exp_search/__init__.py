"""tennis-exp's Hydra plugin (Hydra takes sweepers from the `hydra_plugins` package only): the
sweeper of `hparams_search=<name>`, Hydra's Optuna sweeper, which runs a search as a sweep, so
each trial is a nested MLflow run and the sweep's table and best trial follow."""

from __future__ import annotations

import logging

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class OptunaSearch(OptunaSweeper):
    """Optuna's sweeper, ending normally when no trial finished (it would raise Optuna's "No
    trials are completed yet" while asking for the best one): the sweep then closes its MLflow
    run and the command reports the failed trials in one line, as for any sweep."""

    def sweep(self, arguments: list[str]) -> None:
        try:
            super().sweep(arguments)
        except ValueError as err:
            if "No trials are completed yet" not in str(err):
                raise
            log.warning("No trial of the search finished: there is no best trial")
