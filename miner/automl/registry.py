"""Named supernets: name -> config factory, in the manner of timm's model registry.

A variant is a three-line function returning a config — a :class:`SupernetConfig`
(classification) or a :class:`~miner.automl.stereo.supernet.StereoConfig` (stereo); the
registry applies keyword overrides (any field of that config, validated) and builds the
module the config describes. One registry holds both task kinds.
``create_supernet`` / ``supernet_config`` / ``list_supernets`` use the registry of the
variants defined here; code that wants its own variants makes its own
:class:`SupernetRegistry` and passes it around.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from miner.automl.errors import AutoMLError, UnknownSupernetError
from miner.automl.space import SearchSpace
from miner.automl.stereo.static_net import N_STAGES
from miner.automl.stereo.supernet import StereoConfig
from miner.automl.supernet import OFASupernet, SupernetConfig

AnyConfig = SupernetConfig | StereoConfig
ConfigFactory = Callable[[], AnyConfig]


class SupernetRegistry:
    """A table of supernet variants, filled by :meth:`register` at definition time."""

    def __init__(self) -> None:
        self._factories: dict[str, ConfigFactory] = {}

    def register(self, name: str) -> Callable[[ConfigFactory], ConfigFactory]:
        def decorate(factory: ConfigFactory) -> ConfigFactory:
            if name in self._factories:
                raise AutoMLError(f"supernet {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._factories)

    def config(self, name: str, **overrides: Any) -> AnyConfig:
        """The variant's config with ``overrides`` applied (validated like any config)."""
        if name not in self._factories:
            raise UnknownSupernetError(name, self.names())
        base = self._factories[name]()
        try:
            return type(base)(**{**dict(base), **overrides})
        except ValidationError as exc:
            raise AutoMLError(f"bad overrides for supernet {name!r}: {exc}") from exc

    def create(self, name: str, **overrides: Any) -> OFASupernet:
        return build_module(self.config(name, **overrides))


def build_module(config: AnyConfig) -> OFASupernet:
    """The supernet module a config describes (each config knows its module)."""
    return config.build()


_REGISTRY = SupernetRegistry()
register_supernet = _REGISTRY.register


def create_supernet(name: str, **overrides: Any) -> OFASupernet:
    """Build the registered supernet ``name``; ``overrides`` replace config fields."""
    return _REGISTRY.create(name, **overrides)


def supernet_config(name: str, **overrides: Any) -> AnyConfig:
    """The config of ``name`` without building the module (for cost tables, search)."""
    return _REGISTRY.config(name, **overrides)


def list_supernets() -> list[str]:
    return _REGISTRY.names()


# --- variants -----------------------------------------------------------------------------


@register_supernet("ofa_mbv3")
def ofa_mbv3() -> SupernetConfig:
    """The full OFA-MobileNetV3 space: kernel 3/5/7, expand 3/4/6, depth 2/3/4, 224 px, with
    OFA's stage strides (2, 2, 2, 1, 2), so its costs match the published supernet."""
    return SupernetConfig()


@register_supernet("manta_mbv3")
def manta_mbv3() -> SupernetConfig:
    """The original MANTA layout: as ``ofa_mbv3`` but every stage opens with stride 2."""
    return SupernetConfig(stage_strides=(2, 2, 2, 2, 2))


@register_supernet("ofa_mbv3_tiny")
def ofa_mbv3_tiny() -> SupernetConfig:
    """28x28 grayscale, 10 classes, narrow: the stem halves 28 -> 14 and two stages stride
    2 (14 -> 7 -> 4), so no stage runs below 4x4; the largest net is ~19 MMACs."""
    return SupernetConfig(
        space=SearchSpace(resolutions=(20, 24, 28)), in_channels=1, num_classes=10,
        stem_width=8, stage_widths=(16, 24, 32, 48, 64), stage_strides=(1, 2, 1, 2, 1),
        head_width=128, feature_width=256, dropout=0.0,
    )



@register_supernet("ofa_dispnetc")
def ofa_dispnetc() -> StereoConfig:
    """Stereo, full size: kernel 3/5/7, expand 3/4/6, depth 1/2/3, 256x512 pairs,
    correlation at 1/4 over 40 displacements (160 px), as DispNetC."""
    return StereoConfig()


@register_supernet("ofa_dispnetc_tiny")
def ofa_dispnetc_tiny() -> StereoConfig:
    """Stereo, CPU size: 64x128 pairs, correlation at 1/4 over 8 displacements (32 px),
    narrow; the largest net is ~112 MMACs per pair, the smallest ~56."""
    return StereoConfig(
        space=SearchSpace(kernel_sizes=(3, 5), expand_ratios=(2.0, 3.0, 4.0), depths=(1, 2),
                          resolutions=(64,), n_stages=N_STAGES),
        stem_width=8, stage_widths=(16, 24, 32, 40, 48, 64), stage_strides=(2, 2, 1, 2, 2, 1),
        max_displacement=8, redirect_width=16, decoder_widths=(48, 32, 24, 16, 12, 8),
    )


@register_supernet("ofa_dispnetc_micro")
def ofa_dispnetc_micro() -> StereoConfig:
    """Stereo, test size: ``ofa_dispnetc_tiny`` at 32x64 pairs with 4 displacements (16 px)
    and two expand ratios, for unit tests and CLI smoke runs."""
    base = ofa_dispnetc_tiny()
    assert isinstance(base, StereoConfig)
    return base.model_copy(update={
        "space": SearchSpace(kernel_sizes=(3, 5), expand_ratios=(2.0, 4.0), depths=(1, 2),
                             resolutions=(32,), n_stages=N_STAGES),
        "max_displacement": 4,
    })
