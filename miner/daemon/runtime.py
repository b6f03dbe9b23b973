"""Wiring from settings to live objects: the account, the chain connection, the HTTP server.

Used by the CLI (``manta-miner run``, ``register``, ``status``, ``withdraw``) and by tests
that want the same wiring. Everything is made here and passed down; nothing is global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from eth_account.signers.local import LocalAccount

from miner.daemon import crashpoints
from miner.daemon.artifacts import ArtifactStore
from miner.daemon.daemon import DaemonDeps, MinerDaemon, run_until_stopped
from miner.daemon.metrics import MinerMetrics
from miner.daemon.monitor import MinerMonitor
from miner.daemon.peers import PeerClient
from miner.daemon.progress import ProgressHub
from miner.daemon.result import make_signer
from miner.daemon.server import ServerDeps, create_app
from miner.daemon.settings import MinerSettings
from miner.daemon.settle import ResultDeps
from miner.daemon.specs import SpecFetcher
from miner.daemon.store import StateStore, TaskRecord
from node.chain.market import TaskMarket
from node.chain.models import ZERO_ADDRESS, Deployment
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import SenderConfig, TxSender
from node.config import environment
from node.errors import ConfigError
from node.identity import keystore
from node.identity.passwords import PasswordSource
from node.monitor.timeline import TimelineReader
from node.transport import raise_fd_limit

logger = logging.getLogger(__name__)


def unlock_account(settings: MinerSettings, environ: Mapping[str, str],
                   prompt_fn: Callable[[str], str] | None = None) -> LocalAccount:
    """The miner's key from its keystore, with the password from the configured source."""
    identity = settings.identity
    if not identity.keystore:
        raise ConfigError("no keystore configured: set identity.keystore (or run init)")
    path = keystore.resolve_keystore(identity.keystore, identity.keystore_dir)
    source = PasswordSource(identity.password_env, identity.password_file)
    kwargs: dict[str, Any] = {} if prompt_fn is None else {"prompt_fn": prompt_fn}
    return keystore.unlock(path, source.resolve(environ, **kwargs))


@dataclass(frozen=True)
class Connection:
    """The chain as this miner sees it."""

    rpc: RpcPool
    market: TaskMarket
    deployment: Deployment

    @property
    def address(self) -> str:
        return self.market.sender.address

    async def balances(self) -> dict[str, int]:
        """Wallet balance and withdrawable credit (native, and the deployment's token)."""
        out = {"wallet_wei": await self.rpc.get_balance(self.address),
               "credit_native_wei": await self.market.credit_of(self.address, ZERO_ADDRESS)}
        if self.deployment.token is not None:
            out["credit_token_wei"] = await self.market.credit_of(self.address,
                                                                  self.deployment.token)
        return out


@asynccontextmanager
async def connect(settings: MinerSettings, account: LocalAccount) -> AsyncIterator[Connection]:
    """RPC pool, sender and market for ``account``; the pool is closed on exit."""
    deployment = Deployment.load(settings.chain.deployment_file)
    urls = tuple(settings.chain.rpc_urls) or ((deployment.rpc_url,) if deployment.rpc_url else ())
    if not urls:
        raise ConfigError("no RPC URL: set chain.rpc_urls or the deployment's rpc_url")
    rpc = await RpcPool.create(RpcConfig(urls=urls, chain_id=deployment.chain_id,
                                         timeout_s=settings.chain.timeout_s))
    try:
        sender = await TxSender.create(rpc, account, SenderConfig(
            gas_cap=settings.tx.gas_cap, receipt_timeout_s=settings.tx.receipt_timeout_s,
            poll_interval_s=settings.tx.poll_interval_s))
        market = await TaskMarket.create(rpc, deployment.task_market, sender,
                                         start_block=deployment.start_block)
        yield Connection(rpc, market, deployment)
    finally:
        await rpc.close()


async def register_endpoint(conn: Connection, endpoint: str) -> bool:
    """Announce ``endpoint`` on chain unless it is already there; True if a tx was sent."""
    if await conn.market.endpoint_of(conn.address) == endpoint:
        return False
    await conn.market.register(endpoint)
    return True


async def withdraw_all(conn: Connection) -> dict[str, int]:
    """Withdraw every non-zero credit (native and the deployment's token); wei per token.

    No intent record is needed: a repeated withdraw finds no credit and is skipped (or
    refused in the pre-flight, which costs nothing).
    """
    tokens = [ZERO_ADDRESS] + ([conn.deployment.token] if conn.deployment.token else [])
    withdrawn: dict[str, int] = {}
    for token in tokens:
        credit = await conn.market.credit_of(conn.address, token)
        if credit > 0:
            await conn.market.withdraw(token)
            withdrawn[token] = credit
    return withdrawn


async def serve(settings: MinerSettings, deps: ServerDeps,
                subapps: Mapping[str, web.Application] | None = None,
                routes: Sequence[web.AbstractRouteDef] = ()) -> web.AppRunner:
    """Start the HTTP server on ``http.host:http.port``; ``await runner.cleanup()`` stops it."""
    runner = web.AppRunner(create_app(deps, subapps=subapps, routes=routes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    logger.info("http server listening host=%s port=%d", settings.http.host, settings.http.port)
    return runner


@dataclass
class MinerServices:
    """Everything one running miner is made of (what the training side is wired to)."""

    settings: MinerSettings
    conn: Connection
    store: StateStore
    server: ServerDeps
    daemon: MinerDaemon

    @property
    def hub(self) -> ProgressHub:
        return self.server.hub

    @property
    def artifacts(self) -> ArtifactStore:
        return self.server.artifacts


ServicesHook = Callable[[MinerServices, TaskRecord], Awaitable[None]]


@asynccontextmanager
async def open_miner(settings: MinerSettings, account: LocalAccount,
                     on_group_formed: ServicesHook | None = None,
                     subapps: Mapping[str, web.Application] | None = None,
                     routes: Sequence[web.AbstractRouteDef] = (),
                     ) -> AsyncIterator[MinerServices]:
    """Store, chain connection, HTTP server (endpoint registered) and a daemon not yet
    started; everything is closed on exit. ``on_group_formed`` is where training starts."""
    paths = settings.paths()
    store = StateStore.open(paths.state_db)
    metrics = MinerMetrics()
    services: MinerServices | None = None

    async def hook(record: TaskRecord) -> None:
        if on_group_formed is not None and services is not None:
            await on_group_formed(services, record)

    try:
        async with connect(settings, account) as conn, aiohttp.ClientSession() as session:
            artifacts = ArtifactStore(paths.artifacts_dir, store)
            hub = ProgressHub(settings.http.sse_queue_size, metrics)
            server = ServerDeps(store, artifacts, hub, metrics, conn.address,
                                conn.rpc.chain_id, settings.http.sse_keepalive_s)
            monitor = MinerMonitor(paths.progress_file, TimelineReader(
                conn.market, conn.rpc, conn.deployment.start_block))
            runner = await serve(settings, server, subapps, [*routes, *monitor.routes()])
            try:
                endpoint = settings.http.endpoint()
                await register_endpoint(conn, endpoint)
                signer = make_signer(account, conn.rpc.chain_id, conn.market.address)
                daemon = MinerDaemon(DaemonDeps(
                    rpc=conn.rpc, market=conn.market, store=store, settings=settings,
                    fetch_spec=SpecFetcher(paths.datasets_dir, session), metrics=metrics,
                    start_block=conn.deployment.start_block, on_group_formed=hook,
                    result=ResultDeps(artifacts, PeerClient(session), signer, endpoint,
                                      settings.policy.quorum_wait_s)))
                services = MinerServices(settings, conn, store, server, daemon)
                yield services
            finally:
                await runner.cleanup()
    finally:
        store.close()


async def run_miner(settings: MinerSettings, account: LocalAccount, stop: asyncio.Event,
                    on_group_formed: ServicesHook | None = None, poll_s: float = 5.0) -> None:
    """``manta-miner run``: HTTP server + event loop until ``stop`` is set.

    Without ``on_group_formed``, formed groups train for real
    (:func:`miner.daemon.job.run_job_miner`: training subprocess, search, result).
    ``MANTA_CRASH_*`` in the environment arms a crash point (:mod:`crashpoints`; chaos tests)."""
    crashpoints.arm(crashpoints.CrashPlan.from_environ(environment(), settings.data_dir))
    raise_fd_limit()  # peers, strangers and the monitor's streams each hold a descriptor
    if on_group_formed is None:
        from miner.daemon.job import run_job_miner  # job imports this module

        await run_job_miner(settings, account, stop, poll_s)
        return
    async with open_miner(settings, account, on_group_formed) as services:
        await run_until_stopped(services.daemon, stop, poll_s)
