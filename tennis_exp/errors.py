"""The one exception type for user mistakes, and errors told in one line."""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A mistake in the user's input (config, data, checkpoint, environment).

    Reported as its one-line message without a traceback; ``HYDRA_FULL_ERROR=1``
    shows the traceback anyway.
    """


def first_line(err: BaseException | str) -> str:
    """A message's first line; an exception without one is named by its type."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if isinstance(err, BaseException) else ""


def one_line_report(err: BaseException) -> str:
    """How a failure is recorded (MLflow's error tag, another rank's report): a user mistake
    as the console shows it, anything else with its type, as a bug."""
    line = first_line(err)
    return line if isinstance(err, UserError) else f"{type(err).__name__}: {line}"
