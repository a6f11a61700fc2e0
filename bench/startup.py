"""Where the time to the first training step goes, phase by phase, in a fresh interpreter.

Run as `python bench/startup.py WORK_DIR CONF_DIR NEW_STORE_URI OVERRIDES...`: imports what a
run imports, then calls what `train()` and `train_process()` call, in their order, up to the
end of the first optimizer step. Hydra's compose API stands in for `@hydra.main` (the CLI's own
logging and output-directory set-up are not in these phases). Every mark is `time.time()`, so the
caller can also measure from its own clock, interpreter start included. The result is
WORK_DIR/phases.json.
"""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    marks = [("start", time.time())]

    def mark(label: str) -> None:
        marks.append((label, time.time()))

    work, conf_dir, new_store, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

    import torch

    mark("import torch")
    # Most of it is torch._dynamo, which torch.optim would import at the first optimizer anyway.
    import torchvision  # noqa: F401  (tennis_exp.models imports it at the top)

    mark("import torchvision")
    from hydra import compose, initialize_config_dir

    mark("import hydra")
    import mlflow  # noqa: F401  (tennis_exp.tracking imports it on first use)

    mark("import mlflow")
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    mark("import MLflow's SQLAlchemy store (MLflow loads it at a store's first use)")
    import torch.nn.functional as F
    from torch.utils.data import RandomSampler

    from tennis_exp.config import register_configs, validate
    from tennis_exp.data.frames import build_datasets
    from tennis_exp.data.loaders import make_loader
    from tennis_exp.engine.hardware import plan_run, wrap_model
    from tennis_exp.engine.loop import Job
    from tennis_exp.engine.train import log_run_inputs
    from tennis_exp.models.cnn_lstm import build_model
    from tennis_exp.tracking.runs import ensure_experiment, mlflow_run, tracking_uri

    mark("import tennis_exp")
    imports_done = time.time()

    register_configs()
    with initialize_config_dir(conf_dir, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    mark("config composition and validation")
    plan = plan_run(cfg)
    mark("devices and scaling plan")
    uri = tracking_uri(cfg)
    ensure_experiment(uri, cfg.experiment_name)
    mark("MLflow: open store, experiment")
    datasets = build_datasets(cfg.data, cfg.seed)
    mark("data: synthetic check, scan, frame cache key (warm cache)")
    with mlflow_run(uri, cfg.experiment_name, "bench-startup", {}) as run:
        mark("MLflow: create run (git commit lookup)")
        log_run_inputs(run, Job(cfg, plan, work, run.run_id, uri), overrides)
        mark("MLflow: params, config artifacts")
        torch.manual_seed(cfg.seed)
        model = wrap_model(build_model(cfg.model, len(cfg.data.events)), plan)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=cfg.training.learning_rate)
        mark("model build, optimizer")
        sampler = RandomSampler(datasets["train"], generator=torch.Generator())
        loader = make_loader(
            datasets["train"],
            cfg.training.batch_size,
            cfg.training,
            plan.device,
            cfg.seed,
            sampler=sampler,
        )
        batches = iter(loader)
        frames, labels = next(batches)
        mark("DataLoader start, first batch")
        ready = time.time()
        model.train()
        loss = F.cross_entropy(model(frames.to(plan.device)), labels.to(plan.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        mark("first step: forward, backward, Adam")
        del batches  # stops the loader workers before the run is closed

    # Not a phase of a usual run: the schema migration that only a run into a new store pays.
    started = time.time()
    ensure_experiment(new_store, cfg.experiment_name)
    new_store_s = time.time() - started

    result = {
        "marks": marks,
        "imports_done": imports_done,
        "ready": ready,
        "new_store_s": new_store_s,
    }
    (work / "phases.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
