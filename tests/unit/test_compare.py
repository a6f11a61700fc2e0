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
    rows_for,
    swept_values,
    to_csv,
    to_markdown,
    to_text,
    varies_hardware,
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
    # The swept keys first, then the scores, then how the job ran.
    assert header.startswith(
        "hardware,training.learning_rate,model.x,best_val_macro_f1,test_macro_f1,run,status,"
    )
    assert lines[2].startswith('cpu,,"[1, 2]",,,c,FINISHED,')
    assert to_text(rows).splitlines()[0].split()[:3] == [
        "hardware",
        "training.learning_rate",
        "model.x",
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("5.6115164153345e-05", "5.612e-05"),  # a searched float
        ("0.15212112147976886", "0.1521"),
        ("0.0001", "0.0001"),  # as typed
        ("1e-4", "1e-4"),
        ("123456789", "123456789"),  # a whole number stays whole
        ("badminton_staged", "badminton_staged"),
        (None, "-"),  # a key this job did not set
    ],
)
def test_searched_floats_are_shown_to_four_digits_and_kept_whole_in_the_csv(value, shown):
    row = _row("a", "cpu", 1, 10.0)
    row.swept = {"training.learning_rate": value}
    assert to_text([row]).splitlines()[1].split()[0] == shown
    assert to_csv([row]).splitlines()[1].split(",")[0] == (value or "")


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
    assert header.startswith(
        "experiment,data.train_fraction,best_val_macro_f1,test_macro_f1,recall_serve,"
        "recall_smash,run,status,"
    )
    assert first.startswith("scratch,0.1,,0.3,0.0,0.6,scratch-0.1,")  # a collapsed class: 0.0
    assert to_text(rows).splitlines()[0].split()[:10] == [
        "experiment", "data.train_fraction", "best", "val", "F1", "test", "F1",
        "recall", "serve", "recall"
    ]  # fmt: skip
    path = plot_study(rows, tmp_path / "study.png")
    assert path.stat().st_size > 0
    # Only keys with numbers can be an axis: a sweep of names alone has no study plot.
    for row in rows:
        row.swept = {"experiment": row.swept["experiment"]}
    assert plot_study(rows, tmp_path / "none.png") is None


def test_a_study_of_the_background_class_scores_the_events_alone_and_blanks_a_missing_recall():
    rows = []
    for background, recall, events in [
        ("false", {"serve": 0.9}, 0.7),
        ("true", {"no_event": 0.6, "serve": 0.8}, 0.75),
    ]:
        row = _row(f"background_{background}", "cpu", 1, 10.0)
        row.test_macro_f1, row.test_event_macro_f1, row.test_recall = 0.7, events, recall
        row.swept = {"data.background": background}
        rows.append(row)
    header, without, with_ = to_csv(rows).splitlines()
    assert header.startswith(
        "data.background,best_val_macro_f1,test_macro_f1,test_event_macro_f1,recall_no_event,"
    )
    assert without.startswith("false,,0.7,0.7,,0.9,") and with_.startswith("true,,0.7,0.75,0.6,")
    table = to_markdown(rows).splitlines()
    assert table[0].startswith(
        "| data.background | best val F1 | test F1 | test F1, events | recall no_event |"
    )
    assert table[2].startswith("| false | - | 0.700 | 0.700 | - | 0.900 |")
    # A study without the class has no such column.
    assert "events" not in to_markdown(rows[:1]).splitlines()[0]


def test_a_run_without_the_background_class_scores_its_events_by_its_macro_f1():
    finished = SimpleNamespace(status="FINISHED", start_time=1)
    client = SimpleNamespace(get_metric_history=lambda run_id, key: [])
    runs = [
        SimpleNamespace(
            info=SimpleNamespace(run_id=name, run_name=name, **vars(finished)),
            data=SimpleNamespace(params={}, metrics=metrics, tags={}),
        )
        for name, metrics in [
            ("plain", {"test/macro_f1": 0.8}),
            (
                "background",
                {"test/macro_f1": 0.7, "test/event_macro_f1": 0.85, "test/recall_no_event": 0.6},
            ),
            ("older background", {"test/macro_f1": 0.7, "test/recall_no_event": 0.6}),
        ]
    ]
    rows = {r.run: r for r in rows_for(client, runs)}
    assert rows["plain"].test_event_macro_f1 == 0.8
    assert rows["background"].test_event_macro_f1 == 0.85
    assert rows["older background"].test_event_macro_f1 is None  # logged before it existed


SPEED_HEADERS = ["samples/s", "speed-up", "efficiency"]


@pytest.mark.parametrize(
    ("swept", "ran", "speed"),
    [
        ({"hardware": ["gpu1", "gpu2"]}, [("cuda", 1), ("cuda", 2)], True),
        ({"hardware.strategy": ["dp", "ddp"]}, [("cuda", 2), ("cuda", 2)], True),  # DP vs DDP
        ({"hardware": ["cpu", "gpu1"]}, [("cpu", 1), ("cpu", 1)], True),  # gpu1 fell back
        ({"hardware.devices": ["1", "2"]}, [("cuda", 1), ("cuda", 2)], True),
        # A study: strategies of transfer, learning rates, on the same hardware.
        ({"experiment": ["badminton_scratch", "badminton_staged"]}, [("cpu", 1)] * 2, False),
        ({"training.learning_rate": ["1e-4", "2e-4"]}, [("cuda", 1)] * 2, False),
        # compare --all has no sweep: the runs' own hardware tells.
        ({}, [("cuda", 1), ("cuda", 4)], True),
        ({}, [("cuda", 1), ("cuda", 1)], False),
    ],
)
def test_speed_columns_appear_only_where_the_hardware_varies(swept, ran, speed):
    rows = [_row(f"job{i}", device, n, 100.0 * (i + 1)) for i, (device, n) in enumerate(ran)]
    for i, row in enumerate(rows):
        row.swept = {k: values[i] for k, values in swept.items()}
    assert varies_hardware(rows) is speed
    text, header = to_text(rows), to_text(rows).splitlines()[0]
    assert all(h in header for h in SPEED_HEADERS) is speed
    assert ("fewest devices of the same type" in text) is speed
    assert ("samples_per_sec" in to_csv(rows)) is speed
    assert ("speed-up" in to_markdown(rows)) is speed
    assert "epoch s" in header and "test F1" in header  # a study still shows each job's cost


class _Client:
    """MLflow's client as rows_for reads it: metric histories of fake runs."""

    def __init__(self, histories):
        self.histories = histories

    def get_metric_history(self, run_id, key):
        return [
            SimpleNamespace(value=v, step=i)
            for i, v in enumerate(self.histories[run_id].get(key, []))
        ]


def _measured(run_id, overrides, samples_per_sec):
    run = _run(run_id, overrides)
    run.info.run_name, run.info.status, run.info.start_time = run_id, "FINISHED", len(run_id)
    params = {"scaling.devices": "1", "hardware.strategy": "dp", "run.device": "cpu"}
    run.data.params, run.data.metrics = params, {"test/macro_f1": 0.5}
    return run, {"perf/samples_per_sec": [samples_per_sec], "val/macro_f1": [0.4]}


def test_a_study_on_one_machine_has_no_speed_up_of_one_strategy_over_another():
    """The issue's study: two presets on the CPU, one 1.38x faster. No speed-up; a hardware
    sweep of the same measurements has its speed-ups."""
    for swept, values, speedups in [
        ("experiment", ["badminton_scratch", "badminton_staged"], [None, None]),
        ("hardware", ["cpu", "gpu1"], [1.0, 1.38]),  # gpu1 fell back to the CPU
    ]:
        runs, histories = [], {}
        for run_id, value, speed in zip(["a", "bb"], values, [100.0, 138.0], strict=True):
            run, histories[run_id] = _measured(
                run_id, [f"{swept}={value}", "model=small_cnn"], speed
            )
            runs.append(run)
        rows = rows_for(_Client(histories), runs)
        assert [r.run for r in rows] == ["a", "bb"] and rows[1].samples_per_sec == 138.0
        assert [None if r.speedup is None else round(r.speedup, 2) for r in rows] == speedups
        assert to_text(rows).splitlines()[0].split()[0] == swept


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
