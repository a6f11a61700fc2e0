"""Every command's `--help`: its groups and options, and each key with its value and the comment
the schema writes at the field (tennis_exp/config/help.py)."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hydra import compose, initialize_config_dir

from tennis_exp.config import (
    Config,
    EvaluateConfig,
    PredictConfig,
    PrepareConfig,
    TrackingConfig,
    TrainingConfig,
)
from tennis_exp.config.help import command_help, schema_comments

from ..helpers.commands import run_cli
from ..helpers.configs import CONF, ROOT

COMMANDS = {
    "config": Config,
    "evaluate": EvaluateConfig,
    "predict": PredictConfig,
    "prepare": PrepareConfig,
}


def _help(config_name: str, *overrides: str) -> str:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return command_help(compose(config_name, list(overrides), return_hydra_config=True))


def _leaf_keys(schema: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, its comment) for every key a user can set in `schema`."""
    kinds, comments = typing.get_type_hints(schema), schema_comments(schema)
    keys = []
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(kinds[f.name]):
            keys += _leaf_keys(kinds[f.name], f"{prefix}{f.name}.")
        else:
            keys.append((prefix + f.name, comments.get(f.name, "")))
    return keys


@pytest.mark.parametrize("config_name", COMMANDS)
def test_every_key_of_every_command_is_explained(config_name):
    text = " ".join(_help(config_name).split())  # the comments are wrapped
    for key, comment in _leaf_keys(COMMANDS[config_name]):
        assert comment, f"{key} has no comment in the schema: --help cannot explain it"
        assert f" {key}=" in f" {text}", key
        assert " ".join(comment.split()) in text, key


def test_a_key_is_shown_with_its_value_its_comment_and_its_choices():
    text = _help("config", "hardware=cpu", "training.epochs=5")
    epochs = schema_comments(TrainingConfig)["epochs"]
    assert epochs == "Passes over the training split."
    assert f"\ntraining.epochs=5\n    {epochs}\n" in text
    assert "\nhardware.accelerator=cpu  (cuda | cpu)\n" in text
    assert "\n      ddp: DistributedDataParallel: one process per device\n" in text


def test_the_groups_and_their_options_are_listed_with_the_chosen_one():
    text = _help("config", "experiment=tennis_baseline")
    assert "\nhardware: colab, cpu, cpu_ddp2, gpu1*, gpu2, gpu4\n" in text
    assert "\nmodel: resnet18, resnet50*, small_cnn\n" in text
    assert "tennis_baseline*, tennis_colab, tennis_seed\n" in text
    assert "\nhparams_search: tennis_optuna (none chosen)\n" in text
    assert "== Config groups" not in _help("prepare")  # prepare composes no group


def test_each_command_says_how_to_override():
    for config_name in COMMANDS:
        assert "key=value sets a key, group=option picks a group's option" in _help(config_name)


def test_help_in_a_subprocess_has_the_header_the_keys_and_a_literal_dollar():
    result = run_cli(["--help"], ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("python -m tennis_exp [group=option ...] [key=value ...]\n")
    assert f"\ntraining.epochs=20\n    {schema_comments(TrainingConfig)['epochs']}\n" in out
    # The help template is a string.Template: a comment's $ must come out as written.
    assert "$MLFLOW_TRACKING_URI" in schema_comments(TrackingConfig)["uri"]
    assert "    null: $MLFLOW_TRACKING_URI if set" in out
