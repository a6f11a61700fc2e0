"""notebooks/colab.ipynb runs headlessly, as CI runs it: off Colab its flag skips Drive and the
install and uses synthetic videos and smoke settings; every cell runs in a fresh kernel in a
temporary directory; what it leaves on "Drive" and the pictures it shows are checked."""

from __future__ import annotations

import base64
import os

import pytest

from ..helpers.configs import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"


def test_the_colab_notebook_runs_end_to_end_off_colab(tmp_path, monkeypatch):
    # The kernel and the commands it starts import this checkout and log only where told.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    work = tmp_path / "tennis-exp-work"
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if "evaluate" in cell.metadata.get("tags", []):
                assert (work / "frames" / "manifest.csv").exists()
                assert (work / "runs" / "baseline" / "checkpoints" / "best.pth").exists()
                assert (work / "mlflow.db").exists()
                pytest.importorskip("tennis_exp.evaluate")  # the evaluate command is built on main
            client.execute_cell(cell, index)
    [shown] = [c for c in notebook.cells if "results" in c.metadata.get("tags", [])]
    results = "".join(output.get("text", "") for output in shown.outputs)
    assert "MISSING" not in results and results.count("ok ") == 5, results
    # The pictures are shown inline: the curves, the confusion matrix, a picture per confused
    # pair of the evaluation's gallery, each as the PNG on disk.
    [pictures] = [c for c in notebook.cells if "pictures" in c.metadata.get("tags", [])]
    images = [o["data"]["image/png"] for o in pictures.outputs if "image/png" in o.get("data", {})]
    evaluation = work / "evaluations" / "baseline-test"
    shown = [work / "runs" / "baseline" / "curves.png", evaluation / "confusion_matrix.png"]
    shown += sorted((evaluation / "errors").glob("*.png"))
    assert [base64.b64decode(image) for image in images] == [path.read_bytes() for path in shown]
    printed = "".join(output.get("text", "") for output in pictures.outputs)
    assert "precision    recall  f1-score   support" in printed  # the report
