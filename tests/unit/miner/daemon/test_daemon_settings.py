"""Miner settings: defaults, environment (MANTA_, nested __), TOML file, round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from miner.daemon.settings import load_miner_settings, settings_toml
from node.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MANTA_"):
            monkeypatch.delenv(name)


def test_defaults_and_paths() -> None:
    settings = load_miner_settings()
    assert settings.policy.kinds == ("classification",)
    assert settings.capacity.max_concurrent_tasks == 1
    assert settings.http.endpoint() == "http://127.0.0.1:8700"
    paths = settings.paths()
    assert paths.state_db == Path(".manta/miner/state.sqlite")
    assert paths.cursor_file == Path(".manta/miner/indexer.sqlite")
    assert paths.progress_file(4) == Path(".manta/miner/tasks/4/progress.jsonl")


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "miner.toml"
    toml.write_text('data_dir = "/srv/miner"\n[capacity]\ngpus = 2\nmemory_gib = 40.0\n'
                    '[http]\npublic_url = "https://rig.example/"\n[indexer]\nconfirmations = 2\n')
    monkeypatch.setenv("MANTA_CAPACITY__GPUS", "4")
    monkeypatch.setenv("MANTA_POLICY__KINDS", '["classification", "stereo"]')
    settings = load_miner_settings(toml, capacity={"memory_gib": 80.0, "units_per_hour": None})
    assert settings.capacity.gpus == 4  # env beats file
    assert settings.capacity.memory_gib == 80.0  # override beats env and file
    assert settings.capacity.units_per_hour == 60.0  # None override dropped: default
    assert settings.policy.kinds == ("classification", "stereo")
    assert settings.http.endpoint() == "https://rig.example"
    assert settings.indexer.confirmations == 2
    assert settings.paths().cursor_file == Path("/srv/miner/indexer.sqlite")


def test_invalid_values_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"capacity\.gpus"):
        load_miner_settings(capacity={"gpus": -1})
    with pytest.raises(ConfigError, match=r"policy\.kinds"):
        load_miner_settings(policy={"kinds": ["regression"]})
    with pytest.raises(ConfigError, match="public_url"):
        load_miner_settings(http={"public_url": "ftp://x"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_miner_settings(tmp_path / "missing.toml")


def test_toml_round_trip(tmp_path: Path) -> None:
    settings = load_miner_settings(
        data_dir=str(tmp_path / "d"),
        chain={"rpc_urls": ["http://127.0.0.1:8545"], "chain_id": 31337},
        identity={"keystore": "miner", "password_file": str(tmp_path / "pw")},
        http={"port": 9000, "public_url": "http://10.0.0.2:9000"},
        policy={"min_reward_wei_per_unit": 10**15, "kinds": ["stereo"]},
        capacity={"gpus": 1},
    )
    path = tmp_path / "out.toml"
    path.write_text(settings_toml(settings))
    again = load_miner_settings(path)
    assert again.model_dump(exclude={"config_file"}) == settings.model_dump(
        exclude={"config_file"})
    assert "[capacity]" in path.read_text() and "[tx]" not in path.read_text()
