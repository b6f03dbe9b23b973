"""A local chain for development, tests and the demo: anvil with the contracts deployed.

``devnet = await Devnet.start(DevnetConfig(...))`` starts anvil on 127.0.0.1 (a free port
unless one is given), deploys MantaTestToken and TaskMarket from dev account 0, mints test
tokens to every dev account, optionally writes encrypted keystores of the dev accounts, and
writes the deployment file that every other command reads. ``await devnet.stop()`` (or
leaving ``async with``) stops anvil and removes the deployment file it wrote.

Anvil never outlives us:

- it runs in its own process group, and :meth:`Devnet.stop` terminates the whole group
  (SIGTERM, then SIGKILL after a grace period);
- on Linux it also gets ``PR_SET_PDEATHSIG=SIGKILL``, so the kernel kills it if the Python
  process dies without cleaning up (``kill -9``, a crash). The signal follows the *thread*
  that forked anvil, so :meth:`Devnet.start` must run on the main thread's event loop
  (as ``asyncio.run`` does), never from a worker thread.

Dev accounts are anvil's well-known mnemonic accounts, read from anvil's ``--config-out``
file (then deleted). They hold publicly known keys: devnet only, never real funds. Blocks
are mined on every transaction while the devnet is set up; ``block_time_s`` then switches
to interval mining.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from node.chain.artifacts import load_artifact
from node.chain.deploy import deploy_market
from node.chain.models import Deployment
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import SenderConfig, TxSender
from node.chain.token import Erc20
from node.config import NodeSettings
from node.errors import MantaError
from node.identity.keystore import KdfParams, KeystoreInfo, import_key

logger = logging.getLogger(__name__)

_LISTENING = re.compile(rb"Listening on 127\.0\.0\.1:(\d+)")
_PR_SET_PDEATHSIG = 1


class DevnetError(MantaError):
    """The devnet could not be started or set up."""

    template = "devnet: {detail}"


@dataclass(frozen=True)
class DevnetConfig:
    """How to run the devnet; ``folder`` None = a temporary folder removed on stop."""

    anvil_path: Path = Path("node_modules/.bin/anvil")
    port: int = 0
    block_time_s: int | None = None
    accounts: int = 10
    chain_id: int = 31337
    folder: Path | None = None
    deployment_file: Path | None = None
    mint_wei: int = 10**24
    write_keystores: bool = False
    startup_timeout_s: float = 15.0

    @classmethod
    def from_settings(cls, settings: NodeSettings, **changes: Any) -> DevnetConfig:
        """The devnet section of the process settings (plus the deployment file path)."""
        dev = settings.devnet
        base = cls(
            anvil_path=dev.anvil_path, port=dev.port, block_time_s=dev.block_time_s,
            accounts=dev.accounts, chain_id=dev.chain_id, folder=dev.folder,
            deployment_file=settings.chain.deployment_file, mint_wei=dev.mint_wei,
            startup_timeout_s=dev.startup_timeout_s,
        )
        return dataclasses.replace(base, **changes)


def die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask the kernel to SIGKILL this child when its parent dies (Linux), so no orphan
    outlives a killed launcher; used as ``preexec_fn`` by every process we start."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def find_anvil(configured: Path) -> Path:
    """The anvil binary: the configured path (a relative one is also tried from the source
    checkout's root, so commands work from any folder), else ``anvil`` on PATH.

    npm's ``node_modules/.bin/anvil`` is a node.js launcher that forks the real binary; the
    binary is used directly, since the parent-death signal only reaches a direct child.
    """
    candidates = [configured]
    if not configured.is_absolute():
        candidates.append(Path(__file__).resolve().parents[1] / configured)
    on_path = shutil.which("anvil")
    candidates += [Path(on_path)] if on_path else []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return _native_binary(candidate.resolve())
    raise DevnetError(f"anvil not found at {configured} nor on PATH (run `npm ci`)")


def _native_binary(path: Path) -> Path:
    """The platform binary behind the npm launcher ``@foundry-rs/anvil/bin.mjs``."""
    if path.suffix not in (".mjs", ".js"):
        return path
    for binary in sorted(path.parent.parent.glob("anvil-*/bin/anvil")):
        if os.access(binary, os.X_OK):
            return binary
    logger.warning("anvil is a launcher script, parent-death cleanup is weaker path=%s", path)
    return path


class Devnet:
    """A running anvil with the contracts deployed (see the module docstring)."""

    def __init__(self, config: DevnetConfig, folder: Path, owns_folder: bool,
                 process: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.folder = folder
        self._owns_folder = owns_folder
        self._process = process
        self.rpc_url = ""
        self.accounts: tuple[LocalAccount, ...] = ()
        self.keystores: tuple[KeystoreInfo, ...] = ()
        self.password_file: Path | None = None
        self._rpc: RpcPool | None = None
        self._deployment: Deployment | None = None

    @classmethod
    async def start(cls, config: DevnetConfig) -> Devnet:
        """Start anvil, deploy, mint, write the deployment file; stops anvil on any failure."""
        anvil = find_anvil(config.anvil_path)
        owns = config.folder is None
        folder = Path(tempfile.mkdtemp(prefix="manta-devnet-")) if owns else config.folder
        assert folder is not None
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        devnet = cls(config, folder, owns, cls._spawn(anvil, config, folder))
        try:
            await devnet._wait_listening()
            await devnet._setup()
        except BaseException:
            await devnet.stop()
            raise
        return devnet

    @staticmethod
    def _spawn(anvil: Path, config: DevnetConfig, folder: Path) -> subprocess.Popen[bytes]:
        (folder / "anvil-accounts.json").unlink(missing_ok=True)
        command = [
            str(anvil), "--host", "127.0.0.1", "--port", str(config.port),
            "--chain-id", str(config.chain_id), "--accounts", str(config.accounts),
            "--config-out", str(folder / "anvil-accounts.json"),
        ]
        with open(folder / "anvil.log", "wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        logger.info("anvil started pid=%d folder=%s", process.pid, folder)
        return process

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        log = self.folder / "anvil.log"
        accounts = self.folder / "anvil-accounts.json"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log.read_bytes()[-500:].decode(errors="replace")
                raise DevnetError(f"anvil exited with code {self._process.returncode}: {tail}")
            found = _LISTENING.search(log.read_bytes())
            if found and accounts.is_file():
                self.rpc_url = f"http://127.0.0.1:{int(found.group(1))}"
                keys = json.loads(accounts.read_text())["private_keys"]
                self.accounts = tuple(Account.from_key(k) for k in keys)
                accounts.unlink()
                return
            await asyncio.sleep(0.05)
        raise DevnetError(f"anvil did not listen within {self.config.startup_timeout_s} s")

    async def _setup(self) -> None:
        self._rpc = await RpcPool.create(
            RpcConfig(urls=(self.rpc_url,), chain_id=self.config.chain_id, timeout_s=10.0)
        )
        deployer = await self.sender(0)
        deployment = await deploy_market(deployer, with_token=True, rpc_url=self.rpc_url)
        assert deployment.token is not None
        abi = load_artifact("MantaTestToken").abi
        token = Erc20(self._rpc, deployment.token, abi, deployer)
        for account in self.accounts:
            await token.mint(account.address, self.config.mint_wei)
        if self.config.write_keystores:
            self._write_keystores()
        if self.config.block_time_s is not None:
            await self._rpc.request("evm_setIntervalMining", [self.config.block_time_s])
        if self.config.deployment_file is not None:
            deployment.save(self.config.deployment_file)
        self._deployment = deployment
        logger.info("devnet ready rpc_url=%s market=%s token=%s", self.rpc_url,
                    deployment.task_market, deployment.token)

    def _write_keystores(self) -> None:
        password = SecretStr(secrets.token_urlsafe(16))
        self.password_file = self.folder / "keystore-password"
        self.password_file.unlink(missing_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password.get_secret_value() + "\n")
        keys = self.folder / "keystores"
        if keys.exists():
            shutil.rmtree(keys)
        self.keystores = tuple(
            import_key(keys, SecretStr(account.key.hex()), password, f"dev{i}",
                       kdf=KdfParams.insecure_fast())
            for i, account in enumerate(self.accounts)
        )

    @property
    def rpc(self) -> RpcPool:
        if self._rpc is None:
            raise DevnetError("not connected")
        return self._rpc

    @property
    def deployment(self) -> Deployment:
        if self._deployment is None:
            raise DevnetError("not deployed")
        return self._deployment

    @property
    def chain_id(self) -> int:
        return self.config.chain_id

    @property
    def pid(self) -> int:
        return self._process.pid

    async def sender(self, index: int, config: SenderConfig | None = None) -> TxSender:
        """A transaction sender for dev account ``index``."""
        return await TxSender.create(
            self.rpc, self.accounts[index], config or SenderConfig(receipt_timeout_s=30.0,
                                                                   poll_interval_s=0.05))

    async def stop(self) -> None:
        """Stop anvil (its whole process group) and remove what this devnet wrote."""
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        await asyncio.to_thread(terminate_group, self._process)
        path = self.config.deployment_file
        if self._deployment is not None and path is not None and path.is_file():
            with contextlib.suppress(MantaError):
                if Deployment.load(path) == self._deployment:
                    path.unlink()
        self._deployment = None
        if self._owns_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        logger.info("devnet stopped pid=%d", self._process.pid)

    async def __aenter__(self) -> Devnet:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()


def terminate_group(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``; reap the leader."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
