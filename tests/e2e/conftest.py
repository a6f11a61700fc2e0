"""End-to-end runs: the commands in subprocesses, as users type them."""

# test_docs.py takes these from here until its owner moves its import to the kit.
from ..helpers.commands import run_cli  # noqa: F401
from ..helpers.configs import ROOT  # noqa: F401
