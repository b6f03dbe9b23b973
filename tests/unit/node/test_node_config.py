"""Process settings: defaults, environment (MANTA_, nested __), TOML file, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import environment, load_settings
from node.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("MANTA_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.chain.deployment_file == Path(".manta/deployment.json")
    assert settings.indexer.confirmations == 1
    assert settings.identity.kdf == "scrypt" and settings.identity.kdf_work == 2**18


def test_precedence_override_env_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "manta.toml"
    toml.write_text(
        'log_level = "DEBUG"\n[chain]\nchain_id = 5\nrpc_urls = ["http://toml"]\n'
        "[indexer]\nconfirmations = 3\npoll_interval_s = 4.0\n"
    )
    monkeypatch.setenv("MANTA_CHAIN__CHAIN_ID", "7")
    monkeypatch.setenv("MANTA_INDEXER__POLL_INTERVAL_S", "0.5")
    settings = load_settings(toml, chain={"rpc_urls": ["http://cli"], "timeout_s": None})
    assert settings.log_level == "DEBUG"  # from the file
    assert settings.chain.chain_id == 7  # env beats file
    assert settings.chain.rpc_urls == ["http://cli"]  # override beats everything
    assert settings.chain.timeout_s == 10.0  # None override ignored
    assert settings.indexer.confirmations == 3 and settings.indexer.poll_interval_s == 0.5


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "m.toml"
    toml.write_text("[devnet]\nport = 9999\n")
    monkeypatch.setenv("MANTA_CONFIG_FILE", str(toml))
    assert load_settings().devnet.port == 9999


def test_invalid_values_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTA_INDEXER__CONFIRMATIONS", "0")
    with pytest.raises(ConfigError, match=r"indexer\.confirmations"):
        load_settings()
    monkeypatch.delenv("MANTA_INDEXER__CONFIRMATIONS")
    with pytest.raises(ConfigError, match="not both"):
        load_settings(identity={"password_env": "A", "password_file": tmp_path})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="unknown"):
        load_settings(chain={"unknown": 1})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(log_level="LOUD")
    assert load_settings(log_level="debug").log_level == "DEBUG"


def test_environment_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTA_TEST_PW", "x")
    assert environment()["MANTA_TEST_PW"] == "x"
