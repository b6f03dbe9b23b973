"""The processes a demo (or an end-to-end test) runs, and how it talks to them.

Everything here starts a real process: ``manta-miner run`` daemons (:func:`start_miner`),
``manta data serve`` (:func:`start_data_server`), and one-shot commands whose last stdout
line is JSON (:func:`run_json`, :class:`ClientCli` for ``manta … --json``). Each process
runs in its own process group with ``PR_SET_PDEATHSIG``, so nothing outlives its launcher;
children get our environment without ``MANTA_`` settings and one torch thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from node.devnet import Devnet, die_with_parent
from node.errors import MantaError
from node.ports import free_port

logger = logging.getLogger(__name__)

POLL_S = 0.2
#: The devnet account the demos and tests name as a task's arbiter, and that their miners trust.
DEVNET_ARBITER = 4


class DemoError(MantaError):
    """The demo could not run to the end."""

    template = "demo: {detail}"


def tool(name: str) -> list[str]:
    """The console script ``name`` beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise DemoError(f"{name} not found (pip install -e '.[miner]')")
    return [found]


def child_env() -> dict[str, str]:
    """Our environment without MANTA_ settings (each child gets its own), one torch thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANTA_")}
    env.update(MANTA_TORCH_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


async def _communicate(command: Sequence[str], timeout_s: float) -> tuple[int, str, str]:
    """Run ``command`` to the end (killed with its group after ``timeout_s``)."""
    process = await asyncio.create_subprocess_exec(
        *command, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode is not None
    return (process.returncode, stdout.decode(errors="replace"),
            stderr.decode(errors="replace"))


async def run_json(command: list[str], timeout_s: float = 120.0) -> dict[str, Any]:
    """Run ``command`` (a helper process); its last stdout line as JSON."""
    code, stdout, stderr = await _communicate(command, timeout_s)
    lines = stdout.strip().splitlines()
    if code != 0 or not lines:
        raise DemoError(f"{Path(command[0]).name} {command[1]} exited with {code}: "
                        f"{stderr[-1500:]}")
    payload: dict[str, Any] = json.loads(lines[-1])
    return payload


@dataclass(frozen=True)
class ClientCli:
    """``manta`` as the devnet account ``dev<keystore_index>``, with its own spec store."""

    devnet: Devnet
    keystore_index: int
    spec_store: Path

    def command(self, args: Sequence[str]) -> list[str]:
        devnet = self.devnet
        assert devnet.password_file is not None and devnet.config.deployment_file is not None
        return [*tool("manta"), "--deployment", str(devnet.config.deployment_file),
                "--keystore", f"dev{self.keystore_index}",
                "--keystore-dir", str(devnet.folder / "keystores"),
                "--password-file", str(devnet.password_file),
                "--spec-store", str(self.spec_store), *args]

    async def run(self, args: Sequence[str], timeout_s: float = 300.0) -> dict[str, Any]:
        """``manta <global options> ARGS --json``: its last line as JSON, plus ``_exit_code``.

        A non-zero exit without a JSON last line (a refused command) raises
        :class:`DemoError` with its stderr; ``verify`` exits 1 with a JSON report.
        """
        code, stdout, stderr = await _communicate(self.command([*args, "--json"]), timeout_s)
        lines = stdout.strip().splitlines()
        if code != 0 and not (lines and lines[-1].startswith("{")):
            raise DemoError(f"manta {' '.join(args[:2])} exited with {code}: {stderr[-1500:]}")
        payload: dict[str, Any] = json.loads(lines[-1])
        payload["_exit_code"] = code
        return payload


def start_data_server(folder: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``manta data serve FOLDER`` on a free 127.0.0.1 port; the process and its URL."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*tool("manta"), "data", "serve", str(folder), "--host", "127.0.0.1",
             "--port", str(port)], env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    logger.info("data server started pid=%d port=%d", process.pid, port)
    return process, f"http://127.0.0.1:{port}"


async def until_served(url: str, process: subprocess.Popen[bytes], log: Path,
                       timeout_s: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (the server is up), failing fast if it died."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.head(url) as reply:
                    if reply.status == 200:
                        return
            if process.poll() is not None:
                raise DemoError(f"manta data serve exited with {process.returncode}: "
                                f"{tail(log)}")
            if time.monotonic() > deadline:
                raise DemoError(f"{url} was not served within {timeout_s:.0f} s: {tail(log)}")
            await asyncio.sleep(POLL_S)


@dataclass
class MinerProcess:
    """One ``manta-miner run`` process and where its files are."""

    address: str
    url: str
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.folder / "daemon.log"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"


def miner_toml(folder: Path, devnet: Devnet, index: int, port: int,
               arbiters: Sequence[str] | None = None,
               policy: Mapping[str, object] | None = None) -> Path:
    """A daemon's settings: its data folder, the devnet keystore ``dev<index>``, the port;
    it serves both task kinds (a daemon's default is classification only) and trusts the
    arbiters given (default: the devnet's arbiter account, :data:`DEVNET_ARBITER`)."""
    assert devnet.password_file is not None and devnet.config.deployment_file is not None
    trusted = list(arbiters) if arbiters is not None else [devnet.accounts[DEVNET_ARBITER].address]
    text = (f'data_dir = "{folder / "data"}"\nlog_level = "INFO"\n'
            f'[chain]\ndeployment_file = "{devnet.config.deployment_file}"\n'
            f'[identity]\nkeystore_dir = "{devnet.folder / "keystores"}"\n'
            f'keystore = "dev{index}"\npassword_file = "{devnet.password_file}"\n'
            f'[http]\nport = {port}\n[indexer]\npoll_interval_s = 0.1\n'
            '[tx]\npoll_interval_s = 0.1\n'
            '[policy]\nkinds = ["classification", "stereo"]\n'
            f'arbiters = {json.dumps(trusted)}\n'
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in (policy or {}).items()))
    path = folder / "miner.toml"
    path.write_text(text, encoding="utf-8")
    return path


def start_miner(folder: Path, devnet: Devnet, index: int,
                arbiters: Sequence[str] | None = None,
                policy: Mapping[str, object] | None = None,
                env: Mapping[str, str] | None = None) -> MinerProcess:
    """``manta-miner run`` as the devnet account ``index``, logging to ``folder/daemon.log``
    (``policy``: more ``[policy]`` settings; ``env``: more environment, e.g. a crash point)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = miner_toml(folder, devnet, index, port, arbiters, policy)
    with (folder / "daemon.log").open("ab") as out:
        process = subprocess.Popen(
            [*tool("manta-miner"), "--config", str(config), "--log-level", "INFO", "run"],
            env={**child_env(), **(env or {})}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent)
    logger.info("miner daemon started pid=%d port=%d", process.pid, port)
    return MinerProcess(devnet.accounts[index].address, f"http://127.0.0.1:{port}", folder,
                        process)


async def until(what: Callable[[], Awaitable[bool]], miners: Sequence[MinerProcess],
                timeout_s: float, label: str) -> None:
    """Poll the coroutine function ``what`` until it returns true; a dead miner fails fast."""
    deadline = time.monotonic() + timeout_s
    while not await what():
        for miner in miners:
            if miner.process.poll() is not None:
                raise DemoError(f"miner daemon {miner.address} exited with "
                                f"{miner.process.returncode} while waiting for {label}: "
                                f"{tail(miner.log)}")
        if time.monotonic() > deadline:
            logs = " | ".join(tail(m.log, 800) for m in miners)
            raise DemoError(f"no {label} within {timeout_s:.0f} s; daemon logs: {logs}")
        await asyncio.sleep(POLL_S)
