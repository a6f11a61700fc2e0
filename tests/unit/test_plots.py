"""The pictures, read back by their content: a confusion matrix's panels and numbers, a run's
curves per epoch (a resumed run's earlier epochs too), an evaluation's error gallery (which
windows, labelled how), and a sweep's confusions side by side."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from tennis_exp.engine import loop
from tennis_exp.engine import train as train_module
from tennis_exp.inference import split_report
from tennis_exp.inference.split_report import most_confident_mistakes, write_gallery
from tennis_exp.tracking.plots import (
    CURVE_KEYS,
    confusion_figure,
    confusions_figure,
    curves_figure,
    gallery_figure,
    plot_confusion,
    save,
)
from tennis_exp.tracking.runs import Run

NAMES = ["Smash", "Net Play", "Rally", "Serve"]


def _size(path: Path) -> tuple[int, int]:
    return Image.open(path).size


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_the_confusion_matrix_has_counts_and_shares(tmp_path):
    cm = torch.tensor([[3, 1, 0, 0], [0, 2, 2, 0], [0, 0, 4, 0], [1, 0, 0, 0]])
    fig = confusion_figure(cm, NAMES, "test")
    counts, shares = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["test: counts", "test: row-normalised"]
    assert _texts(counts)[:4] == ["3", "1", "0", "0"]
    assert _texts(shares)[4:8] == ["0.00", "0.50", "0.50", "0.00"]
    assert [t.get_text() for t in counts.get_yticklabels()] == NAMES
    assert _size(plot_confusion(cm, NAMES, "test", tmp_path / "cm.png")) == (1000, 450)


def _history(epochs: int, skip: tuple[str, ...] = ()) -> dict[str, list[tuple[int, float]]]:
    return {
        key: [(e, 0.1 * i + 0.01 * e) for e in range(1, epochs + 1)]
        for i, key in enumerate(CURVE_KEYS)
        if key not in skip
    }


def test_the_curves_are_three_panels_per_epoch(tmp_path):
    history = _history(4)
    fig = curves_figure(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "macro-F1", "learning rate"]
    loss, f1, lr = fig.axes
    assert [line.get_label() for line in loss.lines] == ["train", "val"]
    assert list(loss.lines[1].get_xdata()) == [1, 2, 3, 4]
    assert list(loss.lines[1].get_ydata()) == [v for _, v in history["val/loss"]]
    assert list(f1.lines[0].get_ydata()) == [v for _, v in history["train/macro_f1"]]
    assert lr.get_yscale() == "log" and len(lr.lines) == 1
    assert _size(save(fig, tmp_path / "curves.png")) == (1300, 380)


def test_a_curve_never_logged_is_left_out():
    # A run logged before train macro-F1 was computed has its val curve only.
    _, f1, _ = curves_figure(_history(2, skip=("train/macro_f1",))).axes
    assert [line.get_label() for line in f1.lines] == ["val"]


def test_epochs_are_whole_numbers_even_for_one():
    for ax in curves_figure(_history(1)).axes:
        ax.figure.draw_without_rendering()
        assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1]


def test_history_of_a_run_keeps_each_epoch_once_up_to_the_checkpoint(empty_store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "mlflow.db").write_bytes(empty_store.read_bytes())
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    run = Run(client, run_id)
    for step, value in [(1, 1.0), (2, 2.0), (3, 3.0), (2, 20.0)]:  # 2 again: resumed from best
        run.log_metrics({"val/loss": value}, step=step)
    run.close()
    assert Run(client, run_id).history(["val/loss", "lr"], last_step=2) == {
        "val/loss": [(1, 1.0), (2, 20.0)],
        "lr": [],
    }


@pytest.mark.slow  # two training runs; the test of Run.history above is its fast twin
def test_an_extended_run_draws_all_its_epochs(smoke_cfg, tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(loop, "curves_figure", lambda h: drawn.append(copy.deepcopy(h)) or
                        curves_figure(h))  # fmt: skip
    run_dir = tmp_path / "run"
    train_module.train(copy.deepcopy(smoke_cfg), run_dir)
    assert [e for e, _ in drawn[-1]["val/loss"]] == [1]
    extend = copy.deepcopy(smoke_cfg)
    extend.resume, extend.training.epochs = str(run_dir), 2
    train_module.train(extend, tmp_path / "unused", [f"resume={run_dir}", "training.epochs=2"])
    for key in CURVE_KEYS:
        assert [e for e, _ in drawn[-1][key]] == [1, 2], key
    assert drawn[-1]["val/loss"][0] == drawn[0]["val/loss"][0]  # read back, not recomputed
    assert _size(run_dir / "curves.png") == (1300, 380)


def test_the_most_confident_mistakes_of_each_pair_are_chosen():
    probabilities = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0],  # 0: Smash, right
            [0.2, 0.7, 0.1, 0.0],  # 1: Smash as Net Play, 0.7
            [0.1, 0.8, 0.1, 0.0],  # 2: Smash as Net Play, 0.8
            [0.3, 0.6, 0.1, 0.0],  # 3: Smash as Net Play, 0.6: the third of three
            [0.4, 0.5, 0.1, 0.0],  # 4: Smash as Net Play, 0.5: one too many
            [0.0, 0.1, 0.3, 0.6],  # 5: Rally as Serve
            [0.0, 0.9, 0.1, 0.0],  # 6: Net Play, right
        ]
    )
    labels = np.array([0, 0, 0, 0, 0, 2, 1])
    assert most_confident_mistakes(probabilities, labels, per_pair=3) == {
        (0, 1): [2, 1, 3],
        (2, 3): [5],
    }
    assert most_confident_mistakes(probabilities[[0, 6]], labels[[0, 6]]) == {}


def _dataset(labels: list[int], frames: int = 16):
    """What write_gallery reads of a split: its windows' videos, first frames and clips."""
    videos = [
        SimpleNamespace(folder=f"/d/test/{a}/v{i}", names=[f"frame_{k:04d}.jpg" for k in range(40)])
        for i, a in enumerate(["smash", "net_play"])
    ]
    index = SimpleNamespace(
        labels=np.array(labels),
        windows=np.array([[i % 2, 4 * i] for i in range(len(labels))]),
        videos=videos,
    )

    class Windows:
        def __getitem__(self, i):
            clip = np.full((frames, 3, 8, 8), 20 * i, dtype=np.uint8)
            return torch.from_numpy(clip), labels[i]

    dataset = Windows()
    dataset.index = index
    return dataset


def test_the_gallery_shows_each_confused_pair_s_windows(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(split_report, "gallery_figure",
                        lambda *a: figures.append(gallery_figure(*a)) or figures[-1])  # fmt: skip
    probabilities = torch.tensor(
        [[0.1, 0.7, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]]
    )
    dataset = _dataset([0, 1, 0, 3])  # windows 0 and 2: Smash as Net Play; 1: Net Play as Smash
    paths = write_gallery(probabilities, dataset, NAMES, tmp_path / "errors")
    assert [p.name for p in paths] == ["smash_as_net_play.png", "net_play_as_smash.png"]
    smash = figures[0]
    assert len(smash.axes) == 2 * 6  # two windows, six frames each
    captions = [ax.get_title(loc="left") for ax in smash.axes if ax.get_title(loc="left")]
    assert captions == [
        "smash/v0 frame_0000.jpg: Smash 0.10  Net Play 0.70  Rally 0.10  Serve 0.10",
        "smash/v0 frame_0008.jpg: Smash 0.20  Net Play 0.50  Rally 0.20  Serve 0.10",
    ]
    assert "2 of 2 windows" in smash.get_suptitle()
    # Window 2's frames (filled with 40) in its row: frame t=0, 3, ... of the window.
    assert smash.axes[6].images[0].get_array().max() == 40
    assert [ax.get_xlabel() for ax in smash.axes[:6]] == [f"t={t}" for t in (0, 3, 6, 9, 12, 15)]
    assert _size(paths[0]) == (960, 420) and _size(paths[1]) == (960, 230)


def test_no_mistake_draws_no_gallery(tmp_path, caplog):
    probabilities = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    with caplog.at_level("INFO"):
        assert write_gallery(probabilities, _dataset([0, 1]), NAMES, tmp_path / "errors") == []
    assert "no misclassified window" in caplog.text
    assert not (tmp_path / "errors").exists()


@pytest.mark.parametrize(("jobs", "rows"), [(1, 1), (4, 1), (5, 2)])
def test_the_jobs_confusions_are_side_by_side(tmp_path, jobs, rows):
    confusions = [(f"job {i}", np.eye(4, dtype=int) * (i + 1), NAMES) for i in range(jobs)]
    fig = confusions_figure(confusions, "test")
    assert [ax.get_title() for ax in fig.axes] == [f"job {i}" for i in range(jobs)]
    assert all(_texts(ax)[0] == "1.00" for ax in fig.axes)
    width = 100 * 3.6 * min(jobs, 4)
    assert _size(save(fig, tmp_path / "c.png")) == (round(width), round(420 * rows + 40))


def test_a_background_runs_five_classes_sit_beside_a_four_class_run(tmp_path):
    confusions = [("four", np.eye(4, dtype=int), NAMES),
                  ("five", np.eye(5, dtype=int), [*NAMES, "No event"])]  # fmt: skip
    fig = confusions_figure(confusions, "test")
    assert [len(ax.get_yticklabels()) for ax in fig.axes] == [4, 5]
    assert fig.axes[1].get_yticklabels()[-1].get_text() == "No event"
