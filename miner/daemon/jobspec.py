"""What a training job is, on disk and in the training engine's terms (pure).

A group-formed task becomes a *job folder* ``<data_dir>/tasks/<task_id>/`` holding
``job.json`` (:class:`JobFile`: the spec, the group in slot order, this miner's slot, the
daemon endpoints of every member, where the gradient exchange listens) next to the run
folder, the export and the progress file. The subprocess (:mod:`miner.daemon.jobrunner`)
reads only that folder, plus the miner's key from its stdin.

:func:`train_config` maps a :class:`~node.documents.spec.TaskSpec` onto the training
engine's :class:`~miner.automl.config.TrainConfig`; :func:`search_limits` maps the spec's
constraint onto the search's cost limits. Both are deterministic, so every member of a
group derives the same config (hence the same config hash, the same step plan and the same
sub-networks per step, as the data-parallel scheme requires).

Both task kinds are trained. A ``stereo`` spec names a stereo supernet
(``ofa_dispnetc*``) and the built-in ``procedural-stereo`` dataset; the spec's search space
replaces the supernet's six-stage one (``resolutions`` are image heights, the width follows
the supernet's aspect; the largest disparity is the supernet's correlation range), and it
trains with AdamW (the phase ``lr`` is AdamW's), the stereo head's optimizer, and evaluates
in batches of the training batch size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from miner.automl.config import PhaseConfig, TrainConfig
from node.documents.spec import STEREO_DATASETS, TaskSpec
from node.errors import ConfigError

JOB_FILE = "job.json"
EXCHANGE_FILE = "exchange.json"
RESULT_FILE = "result.json"
RUN_DIR = "run"
EXPORT_DIR = "export"
LOG_FILE = "training.log"
PID_FILE = "runner.pid"  # the runner holding the job folder's lock (a standby one has no
#                          job folder on its command line)

# The stereo supernet's searchable stages (``miner.automl.stereo.static_net.N_STAGES``, not
# imported: that module imports torch, and the daemon reads this module without it).
STEREO_STAGES = 6
TRAINED_KINDS = ("classification", "stereo")


class JobFile(BaseModel):
    """Everything the training subprocess needs except the key (which comes on stdin)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: int = Field(ge=1)
    spec: TaskSpec
    group: tuple[str, ...]  # checksum addresses, slot order (slot 0 leads)
    slot: int = Field(ge=0)
    endpoints: dict[str, str] = Field(default_factory=dict)  # member -> daemon HTTP endpoint
    dataset_path: str | None = None  # a dataset given by URL, already fetched and checked
    exchange_host: str = "127.0.0.1"
    checkpoint_every_steps: int = Field(default=5, ge=1)
    search_subnets: int = Field(default=12, ge=10)
    search_population: int = Field(default=32, ge=4)
    search_generations: int = Field(default=20, ge=1)
    round_timeout_s: float | None = None  # None: the spec's distributed.round_timeout_s

    @property
    def address(self) -> str:
        return self.group[self.slot]

    @property
    def is_leader(self) -> bool:
        return self.slot == 0

    @property
    def peers(self) -> tuple[str, ...]:
        """The other members."""
        return tuple(m for i, m in enumerate(self.group) if i != self.slot)


def train_config(spec: TaskSpec, dataset_path: Path | str | None = None,
                 checkpoint_every_steps: int = 5) -> TrainConfig:
    """The training engine's config for ``spec`` (same on every member of a group).

    The spec's search space replaces the supernet's; ``dataset_path`` is where a dataset
    given by URL was stored (built-in datasets are named).
    """
    check_trainable(spec)
    if spec.dataset.name is not None:
        dataset = spec.dataset.name
    elif dataset_path is not None:
        dataset = str(dataset_path)
    else:
        raise ConfigError("the spec names its dataset by URL but no local copy was given")
    training = spec.training
    phases = tuple(
        PhaseConfig(name=p.name, epochs=float(p.epochs), lr=p.lr,
                    subnets_per_step=1 if p.name == "full" else p.subnets_per_step)
        for p in training.phases)
    return TrainConfig(
        supernet=training.supernet,
        overrides=supernet_overrides(spec),
        dataset=dataset,
        val_fraction=spec.dataset.val_fraction,
        batch_size=training.batch_size,
        seed=spec.seed,
        phases=phases,
        sandwich=training.sandwich,
        distill_weight=training.distill_weight,
        label_smoothing=training.label_smoothing,
        checkpoint_every_steps=checkpoint_every_steps,
        **_kind_settings(spec),
    )


def _kind_settings(spec: TaskSpec) -> dict[str, Any]:
    """TrainConfig fields a task kind sets beyond the spec. Stereo trains with AdamW and
    evaluates (and recalibrates) in batches of the training batch size: a pair is two images
    plus a disparity map, and the engine's default evaluation batch (256) would not fit."""
    if spec.kind == "stereo":
        return {"optimizer": "adamw", "eval_batch_size": spec.training.batch_size}
    return {}


def check_trainable(spec: TaskSpec) -> None:
    """Raise :class:`ConfigError` unless this runner can train ``spec``'s kind on its data.

    A stereo spec needs a built-in stereo dataset (the stereo head reads no dataset file),
    and only a stereo spec can use one.
    """
    if spec.kind not in TRAINED_KINDS:
        raise ConfigError(f"task kind {spec.kind!r} is not trained by this job runner")
    if spec.kind == "stereo" and spec.dataset.name not in STEREO_DATASETS:
        given = spec.dataset.name or "a dataset given by URL"
        raise ConfigError(f"a stereo task trains on {list(STEREO_DATASETS)}, not {given}")
    if spec.kind != "stereo" and spec.dataset.name in STEREO_DATASETS:
        raise ConfigError(f"{spec.dataset.name} is a stereo dataset, the task is {spec.kind}")


def supernet_overrides(spec: TaskSpec) -> dict[str, Any]:
    """The registry overrides that make ``spec.training.supernet`` the spec's search space.

    A stereo space also names its stage count (the classification space keeps the
    supernet's default, and its overrides, hence config hashes, stay as they were).
    """
    space = spec.search_space
    overrides: dict[str, Any] = {
        "kernel_sizes": list(space.kernel_sizes),
        "expand_ratios": list(space.expand_ratios),
        "depths": list(space.depths),
        "resolutions": list(space.resolutions),
    }
    if spec.kind == "stereo":
        overrides["n_stages"] = STEREO_STAGES
    return {"space": overrides}


def search_limits(spec: TaskSpec) -> dict[str, float]:
    """The search's cost limits from the spec's constraint (FLOPs and parameters).

    A latency limit needs a device profile this runner does not have: refused, so a miner
    never submits a network it could not check.
    """
    constraint = spec.constraint
    if constraint.max_latency_ms is not None:
        raise ConfigError("latency constraints are not supported by this job runner")
    limits: dict[str, float] = {}
    if constraint.max_flops is not None:
        limits["flops"] = float(constraint.max_flops)
    if constraint.max_params is not None:
        limits["params"] = float(constraint.max_params)
    return limits


def shard_indices(n: int, slot: int, members: int) -> list[int]:
    """The training examples of member ``slot``: every ``members``-th one, all shards the
    same length (so every member has the same number of batches per epoch)."""
    if not 0 <= slot < members:
        raise ConfigError(f"slot {slot} outside a group of {members}")
    per = n // members
    return list(range(slot, per * members, members))
