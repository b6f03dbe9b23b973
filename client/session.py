"""The client's connection to the chain, made once per command from its settings.

:class:`ClientConfig` is what the CLI resolved from flags, environment and config file
(through :func:`node.config.load_settings`). :func:`connect` loads the deployment, opens the
RPC pool (chain id checked against the deployment), unlocks the keystore only when the
command sends a transaction, and closes everything on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict

from client.errors import NotConfigured
from node.chain.market import TaskMarket
from node.chain.models import Deployment
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import TxSender
from node.config import NodeSettings, environment
from node.identity import keystore
from node.identity.passwords import PasswordSource

DEFAULT_SPEC_STORE = Path(".manta") / "specs"


class ClientConfig(BaseModel):
    """Everything a client command needs to reach the chain and sign."""

    model_config = ConfigDict(frozen=True)

    rpc_urls: tuple[str, ...] = ()
    deployment_file: Path = Path(".manta") / "deployment.json"
    keystore: str | None = None
    keystore_dir: Path = Path(".manta") / "keystores"
    password_env: str | None = None
    password_file: Path | None = None
    timeout_s: float = 10.0
    http_timeout_s: float = 30.0
    spec_store: Path = DEFAULT_SPEC_STORE
    spec_base_url: str | None = None

    @classmethod
    def from_settings(cls, settings: NodeSettings, **extra: object) -> ClientConfig:
        ident = settings.identity
        return cls.model_validate({
            "rpc_urls": tuple(settings.chain.rpc_urls),
            "deployment_file": settings.chain.deployment_file,
            "keystore": ident.keystore, "keystore_dir": ident.keystore_dir,
            "password_env": ident.password_env, "password_file": ident.password_file,
            "timeout_s": settings.chain.timeout_s,
            **{k: v for k, v in extra.items() if v is not None},
        })


def unlock_account(config: ClientConfig) -> LocalAccount:
    """The client's account (prompts for the password when no source is configured)."""
    if config.keystore is None:
        raise NotConfigured(what="the keystore",
                            hint="pass --keystore or set MANTA_IDENTITY__KEYSTORE")
    path = keystore.resolve_keystore(config.keystore, config.keystore_dir)
    password = PasswordSource(config.password_env, config.password_file).resolve(environment())
    return keystore.unlock(path, password)


@dataclass
class Connection:
    rpc: RpcPool
    market: TaskMarket
    deployment: Deployment
    account: str | None


@asynccontextmanager
async def connect(config: ClientConfig, signer: bool = False) -> AsyncIterator[Connection]:
    """An open connection to the market; ``signer`` unlocks the keystore to send from it."""
    deployment = Deployment.load(config.deployment_file)
    urls = config.rpc_urls or ((deployment.rpc_url,) if deployment.rpc_url else ())
    if not urls:
        raise NotConfigured(what="the RPC URL",
                            hint="pass --rpc-url, set MANTA_CHAIN__RPC_URLS or chain.rpc_urls")
    account = await asyncio.to_thread(unlock_account, config) if signer else None
    rpc = await RpcPool.create(RpcConfig(urls=tuple(urls), chain_id=deployment.chain_id,
                                         timeout_s=config.timeout_s))
    try:
        sender = await TxSender.create(rpc, account) if account is not None else None
        market = await TaskMarket.create(rpc, deployment.task_market, sender,
                                         start_block=deployment.start_block)
        yield Connection(rpc, market, deployment, account.address if account else None)
    finally:
        await rpc.close()
