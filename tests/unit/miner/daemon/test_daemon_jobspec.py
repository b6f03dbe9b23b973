"""TaskSpec → TrainConfig and search limits; the job file; data shards (pure)."""

from __future__ import annotations

import pytest
from eth_account import Account

from miner.daemon import jobspec
from miner.daemon.jobspec import (
    STEREO_STAGES,
    JobFile,
    check_trainable,
    search_limits,
    shard_indices,
    supernet_overrides,
    train_config,
)
from node.documents.spec import (
    Constraint,
    DatasetRef,
    PhaseBudget,
    SearchSpaceSpec,
    TaskSpec,
    TrainingBudget,
)
from node.errors import ConfigError


def spec(**changes: object) -> TaskSpec:
    base: dict[str, object] = {
        "kind": "classification", "dataset": DatasetRef(name="digits", val_fraction=0.2),
        "search_space": SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0,),
                                        depths=(1, 2), resolutions=(24, 28)),
        "training": TrainingBudget(batch_size=32, sandwich=True, label_smoothing=0.0, phases=(
            PhaseBudget(name="full", epochs=2, lr=0.1, subnets_per_step=4),
            PhaseBudget(name="depth", epochs=3, lr=0.01, subnets_per_step=3))),
        "constraint": Constraint(max_flops=123, max_params=45), "seed": 9}
    base.update(changes)
    return TaskSpec.model_validate(base)


def test_train_config_follows_the_spec() -> None:
    config = train_config(spec(), checkpoint_every_steps=7)
    assert config.dataset == "digits" and config.val_fraction == 0.2
    assert config.batch_size == 32 and config.seed == 9 and config.sandwich
    assert config.label_smoothing == 0.0 and config.checkpoint_every_steps == 7
    assert config.overrides["space"] == {"kernel_sizes": [3, 5], "expand_ratios": [3.0],
                                         "depths": [1, 2], "resolutions": [24, 28]}
    assert [(p.name, p.epochs, p.lr, p.subnets_per_step) for p in config.phases] == [
        ("full", 2.0, 0.1, 1), ("depth", 3.0, 0.01, 3)]


def test_same_spec_same_config_hash_whatever_the_checkpoint_rate() -> None:
    assert train_config(spec(), checkpoint_every_steps=1).config_hash() == \
        train_config(spec(), checkpoint_every_steps=50).config_hash()
    assert train_config(spec()).config_hash() != train_config(spec(seed=10)).config_hash()


def test_dataset_by_url_needs_its_local_copy() -> None:
    by_url = spec(dataset=DatasetRef(url="https://example.org/d.npz", sha256="0x" + "ab" * 32))
    with pytest.raises(ConfigError):
        train_config(by_url)
    assert train_config(by_url, "/data/ab").dataset == "/data/ab"


def test_limits_from_the_constraint() -> None:
    assert search_limits(spec()) == {"flops": 123.0, "params": 45.0}
    assert search_limits(spec(constraint=Constraint(max_params=5))) == {"params": 5.0}
    latency = spec(constraint=Constraint(max_latency_ms=3.0, device_profile="pi4"))
    with pytest.raises(ConfigError):
        search_limits(latency)


def stereo_spec(**changes: object) -> TaskSpec:
    return spec(**{"kind": "stereo", "objective": "min_epe",
                   "dataset": DatasetRef(name="procedural-stereo"),
                   "training": TrainingBudget(supernet="ofa_dispnetc_micro", batch_size=16,
                                              phases=(PhaseBudget(name="full", epochs=1,
                                                                  lr=0.003),)),
                   "search_space": SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(2.0,),
                                                   depths=(1, 2), resolutions=(32,)),
                   **changes})


def test_stereo_train_config_has_a_six_stage_space_adamw_and_small_eval_batches() -> None:
    config = train_config(stereo_spec())
    assert config.dataset == "procedural-stereo" and config.supernet == "ofa_dispnetc_micro"
    assert config.overrides["space"] == {"kernel_sizes": [3, 5], "expand_ratios": [2.0],
                                         "depths": [1, 2], "resolutions": [32],
                                         "n_stages": 6}
    assert config.optimizer == "adamw" and config.eval_batch_size == 16


def test_classification_config_is_as_before() -> None:
    config = train_config(spec())
    assert "n_stages" not in config.overrides["space"]
    assert config.optimizer == "sgd" and config.eval_batch_size == 256  # the engine's defaults


def test_the_stereo_space_builds_the_engines_stereo_supernet() -> None:
    from miner.automl.data import STEREO_DATASETS
    from miner.automl.registry import supernet_config
    from miner.automl.stereo.static_net import N_STAGES
    from miner.automl.stereo.supernet import StereoConfig

    assert STEREO_STAGES == N_STAGES and jobspec.STEREO_DATASETS == STEREO_DATASETS
    stereo = stereo_spec()
    config = supernet_config("ofa_dispnetc_micro", **supernet_overrides(stereo))
    assert isinstance(config, StereoConfig)
    assert config.space.kernel_sizes == (3, 5) and config.space.expand_ratios == (2.0,)


@pytest.mark.parametrize("bad", [
    stereo_spec(dataset=DatasetRef(name="digits")),
    stereo_spec(dataset=DatasetRef(url="https://example.org/d.npz", sha256="0x" + "ab" * 32)),
    spec(dataset=DatasetRef(name="procedural-stereo")),
], ids=["stereo-on-digits", "stereo-by-url", "classification-on-stereo-pairs"])
def test_a_dataset_of_the_other_kind_is_refused(bad: TaskSpec) -> None:
    with pytest.raises(ConfigError):
        check_trainable(bad)
    with pytest.raises(ConfigError):
        train_config(bad, "/data/ab")


def test_shards_are_disjoint_and_equal() -> None:
    shards = [shard_indices(11, slot, 3) for slot in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])
    with pytest.raises(ConfigError):
        shard_indices(10, 3, 3)


def test_job_file_roles() -> None:
    a, b = Account.create().address, Account.create().address
    job = JobFile(task_id=4, spec=spec(), group=(a, b), slot=1)
    assert job.address == b and not job.is_leader and job.peers == (a,)
    again = JobFile.model_validate_json(job.model_dump_json())
    assert again == job and again.spec.spec_hash() == spec().spec_hash()
