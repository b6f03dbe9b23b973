"""The supernet registry: names, overrides, helpful errors."""

from __future__ import annotations

import pytest

from miner.automl.errors import AutoMLError, UnknownSupernetError
from miner.automl.registry import SupernetRegistry, list_supernets, supernet_config
from miner.automl.space import SearchSpace
from miner.automl.supernet import SupernetConfig


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownSupernetError, match="did you mean 'ofa_mbv3_tiny'"):
        supernet_config("ofa_mbv3_tinny")


def test_overrides_replace_fields_and_are_validated() -> None:
    config = supernet_config("ofa_mbv3", num_classes=10, space=SearchSpace(resolutions=(32,)))
    assert config.num_classes == 10 and config.space.resolutions == (32,)
    assert config.stage_widths == supernet_config("ofa_mbv3").stage_widths
    with pytest.raises(AutoMLError, match="bad overrides"):
        supernet_config("ofa_mbv3", no_such_field=1)
    with pytest.raises(AutoMLError, match="stage_widths"):
        supernet_config("ofa_mbv3", stage_widths=(8, 16))


def test_full_space_is_ofa_mobilenet_v3() -> None:
    space = supernet_config("ofa_mbv3").space
    assert space.kernel_sizes == (3, 5, 7) and space.depths == (2, 3, 4)
    assert space.expand_ratios == (3.0, 4.0, 6.0)
    assert space.resolutions == (224,)
    tiny = supernet_config("ofa_mbv3_tiny")
    assert (tiny.in_channels, tiny.num_classes, tiny.space.resolutions[-1]) == (1, 10, 28)


def test_own_registry_refuses_duplicates() -> None:
    registry = SupernetRegistry()

    @registry.register("mine")
    def mine() -> SupernetConfig:
        return SupernetConfig(num_classes=3)

    assert registry.names() == ["mine"] and "mine" not in list_supernets()
    assert registry.create("mine").classifier.out_features == 3
    with pytest.raises(AutoMLError, match="twice"):
        registry.register("mine")(mine)


def test_stereo_entries_live_in_the_same_registry() -> None:
    from miner.automl.registry import create_supernet
    from miner.automl.stereo.supernet import OFADispNetC, StereoConfig

    assert {"ofa_dispnetc", "ofa_dispnetc_tiny"} <= set(list_supernets())
    config = supernet_config("ofa_dispnetc_tiny", max_displacement=6)
    assert isinstance(config, StereoConfig) and config.max_displacement == 6
    assert config.stage_widths == supernet_config("ofa_dispnetc_tiny").stage_widths
    assert isinstance(create_supernet("ofa_dispnetc_micro"), OFADispNetC)
    with pytest.raises(AutoMLError, match="bad overrides"):
        supernet_config("ofa_dispnetc", num_classes=10)  # a classification-only field
    with pytest.raises(AutoMLError, match="6 stages"):
        supernet_config("ofa_dispnetc", space=SearchSpace())
    with pytest.raises(UnknownSupernetError, match="did you mean 'ofa_dispnetc_tiny'"):
        supernet_config("ofa_dispnetc_tinny")
