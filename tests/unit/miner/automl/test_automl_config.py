"""Training config: phase sub-spaces, TOML loading with field-naming errors, config hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from miner.automl.config import PhaseConfig, TrainConfig, load_train_config
from miner.automl.errors import ArchError
from miner.automl.space import SearchSpace
from node.errors import ConfigError

SPACE = SearchSpace(
    kernel_sizes=(3, 5, 7),
    expand_ratios=(3.0, 4.0, 6.0),
    depths=(2, 3, 4),
    resolutions=(20, 28),
    n_stages=2,
)


def test_default_is_progressive_shrinking() -> None:
    config = TrainConfig()
    assert [p.name for p in config.phases] == ["full", "kernel", "depth", "width"]
    assert config.phases[0].subnets_per_step == 1 and config.phases[1].subnets_per_step == 4


def test_phase_spaces_grow_one_dimension_at_a_time() -> None:
    full, kernel, depth, width = (p.space(SPACE) for p in TrainConfig().phases)
    assert (full.kernel_sizes, full.expand_ratios, full.depths) == ((7,), (6.0,), (4,))
    assert full.resolutions == (20, 28)
    assert (kernel.kernel_sizes, kernel.depths) == ((3, 5, 7), (4,))
    assert (depth.depths, depth.expand_ratios) == ((2, 3, 4), (6.0,))
    assert width == SPACE


def test_explicit_choices_and_choices_outside_the_space() -> None:
    assert PhaseConfig(name="depth", depths=(4, 3)).space(SPACE).depths == (3, 4)
    with pytest.raises(ArchError, match="depths"):
        PhaseConfig(name="depth", depths=(5,)).space(SPACE)


def test_toml_round_trip(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'supernet = "ofa_mbv3_tiny"\ndataset = "digits"\nbatch_size = 32\nseed = 7\n'
        "[overrides]\nhead_width = 64\n"
        '[[phases]]\nname = "full"\nsteps = 5\nlr = 0.1\n'
        '[[phases]]\nname = "width"\nepochs = 0.5\nsubnets_per_step = 3\n'
    )
    config = load_train_config(spec)
    assert config.dataset == "digits" and config.overrides == {"head_width": 64}
    assert [(p.name, p.steps) for p in config.phases] == [("full", 5), ("width", None)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[phases]]\nname = "full"\n[[phases]]\nname = "width"\nlr = -1\n', "phases.1.lr"),
        ('[[phases]]\nname = "shrink"\n', "phases.0.name"),
        ("batch_sise = 3\n", "batch_sise: Extra inputs"),
        ("batch_size = 0\n", "batch_size: Input should be greater than or equal to 1"),
        ("phases = []\n", "at least one phase"),
        ("batch_size = [\n", "not valid TOML"),
    ],
)
def test_bad_toml_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_train_config(spec)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_train_config(tmp_path / "nope.toml")


def test_config_hash_is_stable_and_sensitive() -> None:
    assert TrainConfig(seed=1).config_hash() == TrainConfig(seed=1).config_hash()
    assert TrainConfig(seed=1).config_hash() != TrainConfig(seed=2).config_hash()
    assert TrainConfig(overrides={"a": 1}).config_hash() != TrainConfig().config_hash()


def test_bookkeeping_fields_do_not_change_the_hash() -> None:
    base = TrainConfig().config_hash()
    assert TrainConfig(checkpoint_every_steps=7, eval_batch_size=3).config_hash() == base


def test_optimizer_and_scale_schedule_are_validated_and_hashed() -> None:
    base = TrainConfig()
    assert base.optimizer == "sgd" and base.scale_schedule == ()
    # runs made before these fields existed keep their hash: defaults are left out of it
    assert base.config_hash() == TrainConfig(optimizer="sgd", scale_schedule=()).config_hash()
    assert TrainConfig(optimizer="adamw").config_hash() != base.config_hash()
    schedule = ((0.0, (1.0, 0.5)), (1.0, (0.0, 1.0)))
    assert TrainConfig(scale_schedule=schedule).config_hash() != base.config_hash()
    with pytest.raises(ValidationError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValidationError, match="sorted by progress"):
        TrainConfig(scale_schedule=((1.0, (1.0,)), (0.0, (1.0,))))
