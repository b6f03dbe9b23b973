"""Local training and search runs over a run folder (what ``manta-miner automl`` calls).

A run folder holds ``train_config.json`` (the :class:`TrainConfig`, canonical JSON) and
``checkpoints/``. :func:`prepare_training` checks everything that can fail — config,
supernet name, dataset shape, an existing run, the checkpoint to resume — before anything is
written; :func:`run_training` then trains. :func:`run_search` reads a trained run, measures
sampled sub-networks on the validation split (after BN recalibration), fits the accuracy
predictor, searches under the limits, recalibrates and exports the chosen network into a
fresh folder that appears only once complete.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miner.automl.calibrate import recalibrate_bn
from miner.automl.checkpoint import CheckpointStore, load_checkpoint, write_atomic
from miner.automl.config import TrainConfig, parse_train_config
from miner.automl.data import (
    STEREO_DATASETS,
    BatchIterator,
    ImageDataset,
    load_dataset,
    procedural_stereo,
    split_dataset,
)
from miner.automl.errors import CheckpointError, ConstraintError
from miner.automl.space import Arch
from miner.automl.supernet import OFASupernet
from miner.automl.train import Trainer, build_supernet, evaluate_metric, make_task, score
from miner.automl.train.loop import ProgressFn
from node.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.json"
CHECKPOINT_DIR = "checkpoints"
SEARCH_FILE = "search.json"


# stereo: the procedural scenes use this fraction of the disparity the network can see
STEREO_SCENE_FRACTION = 0.75


def stereo_pairs(sconf: Any, n: int, seed: int) -> ImageDataset:
    """``n`` procedural pairs of seed ``seed`` sized for the largest input of a stereo
    supernet config ``sconf``, with disparities up to :data:`STEREO_SCENE_FRACTION` of what
    it can see: the scenes a stereo run trains on, and (with another seed) the pairs a
    client holds out."""
    h, w = sconf.image_size(max(sconf.space.resolutions))
    return procedural_stereo(n, h, w, STEREO_SCENE_FRACTION * sconf.max_disparity, seed)


def load_splits(config: TrainConfig, net: OFASupernet) -> tuple[ImageDataset, ImageDataset]:
    """The run's (train, val) split, shaped for ``net``'s largest input."""
    sconf = net.config
    if net.task_kind == "stereo":
        if config.dataset not in STEREO_DATASETS:
            raise ConfigError(f"dataset {config.dataset!r} cannot train the stereo supernet "
                              f"{config.supernet!r}; stereo datasets: {list(STEREO_DATASETS)}")
        data = stereo_pairs(sconf, config.synthetic_size, config.seed)
        return split_dataset(data, config.val_fraction, config.seed)
    data = load_dataset(
        config.dataset,
        image_size=max(net.space.resolutions),
        in_channels=sconf.in_channels,
        num_classes=sconf.num_classes,
        seed=config.seed,
        synthetic_size=config.synthetic_size,
    )
    return split_dataset(data, config.val_fraction, config.seed)


def calibration_batches(
    train: ImageDataset, batch_size: int, n_batches: int, seed: int
) -> list[torch.Tensor]:
    """A fixed sample of training images for BN recalibration."""
    it = BatchIterator(train, min(batch_size, len(train)), seed + 1)
    return [next(it)[0] for _ in range(max(1, n_batches))]


def read_run_config(path: Path) -> TrainConfig:
    """The :class:`TrainConfig` a run folder was made with."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the run's config: {exc}") from exc
    return parse_train_config(data, str(path))


# --- training ------------------------------------------------------------------------------


@dataclass
class PreparedTraining:
    config: TrainConfig
    out_dir: Path
    trainer: Trainer
    val: ImageDataset
    resumed_step: int | None


@dataclass(frozen=True)
class TrainingSummary:
    """``val_accuracy``: the task's validation metric of the largest and smallest
    sub-networks (accuracy for classification, EPE for stereo), named by ``metric``."""

    out_dir: Path
    global_step: int
    total_steps: int
    resumed_step: int | None
    val_accuracy: dict[str, float]
    metric: str = "accuracy"


def prepare_training(
    config: TrainConfig, out_dir: Path, resume: bool, device: torch.device | None = None
) -> PreparedTraining:
    """Everything a training run needs, checked; writes nothing."""
    config_file = out_dir / CONFIG_FILE
    store = CheckpointStore(out_dir / CHECKPOINT_DIR)
    if not resume and (config_file.exists() or store.steps()):
        raise ConfigError(f"{out_dir} already holds a run; pass --resume or choose another --out")
    if resume and config_file.exists():
        saved = read_run_config(config_file)
        if saved.config_hash() != config.config_hash():
            raise CheckpointError(
                path=str(config_file), detail="the run was made with another spec"
            )
    net = build_supernet(config).to(device or torch.device("cpu"))
    train, val = load_splits(config, net)
    trainer = Trainer(config, net, train, store=store, device=device)
    resumed = trainer.global_step if resume and trainer.resume() else None
    return PreparedTraining(config, out_dir, trainer, val, resumed)


def run_training(
    prepared: PreparedTraining, on_progress: ProgressFn | None = None, calib_batches: int = 4
) -> TrainingSummary:
    """Train to the end of the plan, then report the val metric (accuracy or EPE) of the
    largest and smallest sub-networks (BN recalibrated)."""
    config, trainer = prepared.config, prepared.trainer
    prepared.out_dir.mkdir(parents=True, exist_ok=True)
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, indent=1)
    write_atomic(prepared.out_dir / CONFIG_FILE, canonical.encode())
    trainer.on_progress = on_progress
    trainer.run()
    net, space = trainer.net, trainer.net.space
    batches = calibration_batches(
        trainer.batches.data, config.eval_batch_size, calib_batches, config.seed
    )
    accuracy = {}
    for name, arch in (("largest", space.max_arch()), ("smallest", space.min_arch())):
        recalibrate_bn(net, arch, batches, trainer.device)
        accuracy[name] = evaluate_metric(
            net, arch, prepared.val, trainer.task, config.eval_batch_size, trainer.device
        )
    return TrainingSummary(
        prepared.out_dir,
        trainer.global_step,
        trainer.plan.total_steps,
        prepared.resumed_step,
        accuracy,
        trainer.task.metric,
    )


# --- search --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchRequest:
    run_dir: Path
    out_dir: Path
    limits: Mapping[str, float] = field(default_factory=dict)
    objective: str = "flops"
    n_subnets: int = 40
    calib_batches: int = 4
    population: int = 64
    generations: int = 60
    seed: int = 0
    onnx: bool = False  # also export model.onnx (needs the onnx extra)


@dataclass(frozen=True)
class SearchSummary:
    """``val_accuracy`` / ``predicted_accuracy``: the chosen network's measured and predicted
    task metric (accuracy for classification, EPE for stereo), named by ``metric``."""

    out_dir: Path
    arch: Arch
    predicted_accuracy: float
    val_accuracy: float
    costs: dict[str, float]
    predictor_kendall_tau: float
    front_size: int
    metric: str = "accuracy"


SubnetProgress = Callable[[int, int], None]


def _load_trained(run_dir: Path) -> tuple[TrainConfig, OFASupernet]:
    config_file = run_dir / CONFIG_FILE
    if not config_file.exists():
        raise ConfigError(f"{run_dir} is not a training run (no {CONFIG_FILE})")
    config = read_run_config(config_file)
    latest = CheckpointStore(run_dir / CHECKPOINT_DIR).latest()
    if latest is None:
        raise CheckpointError(path=str(run_dir / CHECKPOINT_DIR), detail="no checkpoint")
    payload = load_checkpoint(latest, config.config_hash())
    net = build_supernet(config)
    try:
        net.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(path=str(latest), detail=f"weights do not fit: {exc}") from exc
    return config, net


def _check_feasible(costs: Mapping[str, Any], limits: Mapping[str, float]) -> None:
    from miner.automl.search import cheapest

    for name, limit in limits.items():
        if name not in costs:
            raise ConstraintError(detail=f"on unknown cost {name!r}; known: {sorted(costs)}")
        low, _ = cheapest(costs[name])
        if low > limit:
            raise ConstraintError(
                detail=f"{name} <= {limit:.6g}: the cheapest sub-network needs {low:.6g}"
            )


@dataclass
class PreparedSearch:
    request: SearchRequest
    config: TrainConfig
    net: OFASupernet
    problem: Any
    train: ImageDataset
    val: ImageDataset


def prepare_search(request: SearchRequest) -> PreparedSearch:
    """Load and check the trained run, the limits and the data; writes nothing."""
    if request.onnx:  # before the search, not after it: a missing package would waste it
        from miner.automl.export import require_onnx

        require_onnx()
    from miner.automl.efficiency import flops_table, params_table
    from miner.automl.search import SearchProblem

    if request.out_dir.exists():
        raise ConfigError(f"{request.out_dir} already exists; choose another --out")
    if request.n_subnets < 10:
        raise ConfigError(
            f"--n-subnets must be >= 10 to fit the predictor, got {request.n_subnets}"
        )
    config, net = _load_trained(request.run_dir)
    costs = {"flops": flops_table(net.config), "params": params_table(net.config)}
    _check_feasible(costs, request.limits)
    problem = SearchProblem(net.space, costs, request.objective, dict(request.limits))
    train, val = load_splits(config, net)
    return PreparedSearch(request, config, net, problem, train, val)


def run_search(prepared: PreparedSearch, on_subnet: SubnetProgress | None = None) -> SearchSummary:
    """Measure, predict, search, recalibrate, export. Writes only ``request.out_dir``.

    The predictor and the search see the task's score (the metric, negated when lower is
    better: stereo minimises EPE); ``search.json`` records the metric as ``val_<metric>``.
    """
    from miner.automl.export import export_subnet
    from miner.automl.predictor import AccuracyPredictor
    from miner.automl.search import SearchConfig, evolve

    request, config, net = prepared.request, prepared.config, prepared.net
    space, val = net.space, prepared.val
    task = make_task(net, config)
    key = f"val_{task.metric}"
    batches = calibration_batches(
        prepared.train, config.eval_batch_size, request.calib_batches, config.seed
    )
    rng = np.random.default_rng(np.random.SeedSequence([request.seed, 31337]))
    archs = [space.max_arch(), space.min_arch()]
    archs += [space.sample(rng) for _ in range(request.n_subnets - 2)]
    metrics = []
    for i, arch in enumerate(archs):
        recalibrate_bn(net, arch, batches)
        metrics.append(evaluate_metric(net, arch, val, task, config.eval_batch_size))
        if on_subnet is not None:
            on_subnet(i + 1, len(archs))
    predictor = AccuracyPredictor(space)
    report = predictor.fit(archs, [score(task, m) for m in metrics], rng)
    result = evolve(
        prepared.problem,
        predictor.predict_batch,
        SearchConfig(population=request.population, generations=request.generations),
        rng,
    )
    chosen = result.chosen.arch
    recalibrate_bn(net, chosen, batches)
    measured = evaluate_metric(net, chosen, val, task, config.eval_batch_size)
    predicted = score(task, result.chosen.accuracy)  # a score is its own inverse
    summary = {
        "chosen": result.chosen.to_dict(),
        "metric": task.metric,
        key: measured,
        "predictor": {
            "kendall_tau": report.kendall_tau,
            "rmse": report.rmse,
            "n_train": report.n_train,
        },
        "measured": [
            {"arch": a.to_dict(), key: m} for a, m in zip(archs, metrics, strict=True)
        ],
        "search": result.to_dict(),
        # the largest sub-network, measured like the chosen one: the reference it is compared to
        "largest": {"arch": archs[0].to_dict(), key: metrics[0],
                    "score": score(task, metrics[0]),  # as the front is scored
                    "costs": {n: c.of(archs[0]) for n, c in prepared.problem.costs.items()}},
        "limits": dict(request.limits),
        "objective": request.objective,
    }
    staging = request.out_dir.with_name(f".{request.out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        export_subnet(net, chosen, staging, onnx=request.onnx)
        write_atomic(staging / SEARCH_FILE, json.dumps(summary, sort_keys=True, indent=1).encode())
        staging.rename(request.out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("search exported out=%s %s=%.4f", request.out_dir, key, measured)
    return SearchSummary(
        request.out_dir,
        chosen,
        predicted,
        measured,
        dict(result.chosen.costs),
        report.kendall_tau,
        len(result.front),
        task.metric,
    )
