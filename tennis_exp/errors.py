"""The one exception type for user mistakes."""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A mistake in the user's input (config, data, checkpoint, environment).

    Reported as its one-line message without a traceback; ``HYDRA_FULL_ERROR=1``
    shows the traceback anyway.
    """
