"""The sweep table's arithmetic, and sweeps found by paths MLflow filters must quote."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from tennis_exp.tracking.compare import (
    Row,
    add_speedups,
    plot_study,
    swept_values,
    to_csv,
    to_text,
)
from tennis_exp.tracking.runs import ensure_experiment, filter_value, runs_tagged
from tennis_exp.tracking.sweep import SweepTracking, child_runs, record_failed_job, sweep_parent

from ..helpers.configs import CONF, compose_config


def _row(name, device, devices, samples_per_sec):
    return Row(name, "FINISHED", devices, "dp", 32, 32 * devices, device, 1e-4, samples_per_sec)


def test_speedup_and_efficiency_compare_jobs_on_the_same_device_type():
    rows = [
        _row("cpu", "cpu", 1, 50.0),
        _row("gpu1", "cuda", 1, 400.0),
        _row("gpu2", "cuda", 2, 680.0),
        _row("gpu4", "cuda", 4, 1200.0),
        _row("failed", None, 2, None),
    ]
    add_speedups(rows)
    by_name = {r.run: r for r in rows}
    assert (by_name["cpu"].speedup, by_name["cpu"].efficiency) == (1.0, 1.0)  # not 400/50
    assert by_name["gpu1"].speedup == 1.0
    assert by_name["gpu2"].speedup == pytest.approx(1.7)  # the guide's ~1.7x
    assert by_name["gpu2"].efficiency == pytest.approx(0.85)
    assert by_name["gpu4"].speedup == pytest.approx(3.0)
    assert by_name["gpu4"].efficiency == pytest.approx(0.75)
    assert by_name["failed"].speedup is None and by_name["failed"].efficiency is None
    assert "fewest devices of the same type" in to_text(rows)


def _run(run_id, overrides):
    info = SimpleNamespace(run_id=run_id)
    return SimpleNamespace(
        info=info, data=SimpleNamespace(tags={"overrides": json.dumps(overrides)})
    )


def test_the_table_has_a_column_per_key_the_sweep_varied():
    runs = [
        _run("a", ["hardware=cpu", "debug=smoke", "training.learning_rate=0.0001"]),
        _run("b", ["hardware=gpu1", "debug=smoke", "training.learning_rate=0.0002"]),
        _run("c", ["hardware=cpu", "debug=smoke", "model.x=[1, 2]"]),  # a key of its own
    ]
    swept = swept_values(runs)
    assert swept == {
        "a": {"hardware": "cpu", "training.learning_rate": "0.0001", "model.x": None},
        "b": {"hardware": "gpu1", "training.learning_rate": "0.0002", "model.x": None},
        "c": {"hardware": "cpu", "training.learning_rate": None, "model.x": "[1, 2]"},
    }
    rows = [_row(name, "cpu", 1, 10.0) for name in "abc"]
    for row in rows:
        row.swept = swept[row.run]
    header, *lines = to_csv(rows).splitlines()
    assert header.endswith(",test_macro_f1,hardware,training.learning_rate,model.x")
    assert lines[2].endswith(',cpu,,"[1, 2]"')
    assert to_text(rows).splitlines()[0].split()[-3:] == [
        "hardware",
        "training.learning_rate",
        "model.x",
    ]


def test_a_study_shows_each_class_recall_and_plots_against_its_numeric_key(tmp_path):
    rows = []
    for strategy, fraction, f1, recall in [
        ("scratch", "0.1", 0.30, {"serve": 0.0, "smash": 0.6}),
        ("scratch", "1.0", 0.70, {"serve": 0.7, "smash": 0.8}),
        ("frozen", "0.1", 0.55, {"serve": 0.4, "smash": 0.7}),
    ]:
        row = _row(f"{strategy}-{fraction}", "cpu", 1, 10.0)
        row.test_macro_f1, row.test_recall = f1, recall
        row.swept = {"experiment": strategy, "data.train_fraction": fraction}
        rows.append(row)
    header, first, *_ = to_csv(rows).splitlines()
    assert header.endswith(
        ",test_macro_f1,recall_serve,recall_smash,experiment,data.train_fraction"
    )
    assert first.endswith(",0.3,0.0,0.6,scratch,0.1")  # a collapsed class reads as 0.0
    assert to_text(rows).splitlines()[0].split()[-6:] == [
        "recall", "serve", "recall", "smash", "experiment", "data.train_fraction"
    ]  # fmt: skip
    path = plot_study(rows, tmp_path / "study.png")
    assert path.stat().st_size > 0
    # Only keys with numbers can be an axis: a sweep of names alone has no study plot.
    for row in rows:
        row.swept = {"experiment": row.swept["experiment"]}
    assert plot_study(rows, tmp_path / "none.png") is None


def test_the_baseline_is_the_fewest_devices_even_if_listed_later():
    rows = [_row("gpu4", "cuda", 4, 800.0), _row("gpu2", "cuda", 2, 500.0)]
    add_speedups(rows)
    assert rows[0].speedup == pytest.approx(1.6) and rows[0].efficiency == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("/a/b", "'/a/b'"), ("/data/o'brien", '"/data/o\'brien"'), ('/x/"y"', "'/x/\"y\"'")],
)
def test_filter_values_are_quoted(value, quoted):
    assert filter_value(value) == quoted


def test_a_sweep_under_a_path_with_a_quote_is_found(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "o'brien's sweep"
    cfg = compose_config(["hardware=gpu2", f"tracking.uri={uri}"])
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(uri, cfg.experiment_name)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        sweep_cfg = compose(
            "config",
            [f"tracking.uri={uri}", f'hydra.sweep.dir="{sweep_dir}"'],
            return_hydra_config=True,
        )
    SweepTracking().on_multirun_start(sweep_cfg)
    parent = sweep_parent(client, experiment_id, str(sweep_dir))
    assert parent is not None

    job_dir = sweep_dir / "0-gpu2"
    for _ in range(2):  # the second call finds the first's run and adds none
        record_failed_job(cfg, job_dir, str(sweep_dir), "hardware=gpu2 needs 2 CUDA device(s)")
    [job] = child_runs(client, client.get_run(parent))
    assert job.info.status == "FAILED" and job.data.tags["output_dir"] == str(job_dir)
    assert runs_tagged(client, experiment_id, {"output_dir": str(job_dir)})
