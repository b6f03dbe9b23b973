"""The daemon's ``manta-miner`` commands as a Typer app: ``init``, ``register``, ``run``,
``status``, ``withdraw``.

``miner/cli.py`` (the console script ``miner.cli:main``) mounts :data:`app`. Each command
parses its options, calls one function of :mod:`miner.daemon.runtime` and renders the
result (rich for people, ``--json`` for machines). Our errors are handled once: a
:class:`~node.errors.MantaError` prints its message and exits with code 1. Passwords never
come from argv: ``identity.password_env`` / ``password_file`` settings, else a prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from miner.daemon.runtime import connect, register_endpoint, run_miner, unlock_account, withdraw_all
from miner.daemon.settings import MinerSettings, load_miner_settings, settings_toml
from miner.daemon.store import StateStore
from node.cli_errors import MantaErrorGroup
from node.config import environment
from node.errors import ConfigError
from node.identity import keystore
from node.identity.passwords import PasswordSource

logger = logging.getLogger(__name__)


_ErrorHandlingGroup = MantaErrorGroup


app = typer.Typer(cls=_ErrorHandlingGroup, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, help="Run a MANTA miner.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]


@app.callback()
def _root(ctx: typer.Context,
          config: Annotated[Path | None, typer.Option(help="TOML settings file.")] = None,
          log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING…")] = None
          ) -> None:
    """Run a MANTA miner: init, register, run, status, withdraw."""
    settings = load_miner_settings(config, log_level=log_level)
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = config


def _settings(ctx: typer.Context, **overrides: Any) -> MinerSettings:
    return load_miner_settings(ctx.find_root().obj, **overrides)


def _emit(as_json: bool, payload: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, sort_keys=True))
        return
    console = Console()
    for line in lines:
        console.print(line)


@app.command()
def init(ctx: typer.Context,
         config_out: Annotated[Path, typer.Option(help="Where to write the TOML file.")] = Path(
             "manta-miner.toml"),
         name: Annotated[str, typer.Option(help="Keystore name.")] = "miner",
         rpc_url: Annotated[list[str] | None, typer.Option(help="JSON-RPC URL(s).")] = None,
         public_url: Annotated[str | None, typer.Option(help="URL peers reach.")] = None,
         gpus: Annotated[int | None, typer.Option()] = None,
         arbiter: Annotated[list[str] | None, typer.Option(
             help="An arbiter you trust to rule on disputes of your work (repeatable); "
                  "tasks naming any other are not claimed.")] = None,
         force: Annotated[bool, typer.Option(help="Overwrite the TOML file.")] = False,
         as_json: JsonOpt = False) -> None:
    """Create an encrypted keystore and write a settings file that uses it."""
    if config_out.exists() and not force:
        raise ConfigError(f"{config_out} exists (use --force to overwrite)")
    settings = _settings(ctx, chain={"rpc_urls": rpc_url or None},
                         identity={"keystore": name}, http={"public_url": public_url},
                         capacity={"gpus": gpus}, policy={"arbiters": arbiter or None})
    identity = settings.identity
    password = PasswordSource(identity.password_env, identity.password_file).resolve(
        environment(), confirm=True)
    info = keystore.create(identity.keystore_dir, password, name,
                           kdf=keystore.KdfParams(identity.kdf, identity.kdf_work))
    config_out.parent.mkdir(parents=True, exist_ok=True)
    config_out.write_text(settings_toml(settings), encoding="utf-8")
    _emit(as_json, {"address": info.address, "keystore": str(info.path),
                    "config": str(config_out)},
          [f"keystore [bold]{info.name}[/] {info.address} → {info.path}",
           f"settings → {config_out}"]
          + ([] if settings.policy.arbiters else [
              "no arbiter trusted yet: this miner claims nothing until the setting "
              "policy.arbiters names one (or run init again with --arbiter)"]))


@app.command()
def register(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Announce this miner's endpoint (``http.public_url``) on chain."""
    settings = _settings(ctx)
    account = unlock_account(settings, environment())

    async def go() -> bool:
        async with connect(settings, account) as conn:
            return await register_endpoint(conn, settings.http.endpoint())

    sent = asyncio.run(go())
    _emit(as_json, {"address": account.address, "endpoint": settings.http.endpoint(),
                    "sent": sent},
          [f"{account.address} → {settings.http.endpoint()}"
           + ("" if sent else " (already registered)")])


@app.command()
def status(ctx: typer.Context, offline: Annotated[bool, typer.Option(
        help="Only the local state, no chain calls.")] = False, as_json: JsonOpt = False) -> None:
    """What the miner is doing: its tasks (local store), balances and reputation (chain)."""
    settings = _settings(ctx)
    with StateStore.open(settings.paths().state_db) as store:
        tasks = [{"task_id": t.task_id, "phase": t.phase.value, "role": t.role,
                  "reason": t.reason} for t in store.tasks()]
        open_txs = len(store.open_txs())
    payload: dict[str, Any] = {"tasks": tasks, "open_transactions": open_txs}
    if not offline:
        account = unlock_account(settings, environment())

        async def chain() -> dict[str, Any]:
            async with connect(settings, account) as conn:
                rep = await conn.market.reputation_of(conn.address)
                return {"address": conn.address, **await conn.balances(),
                        "endpoint": await conn.market.endpoint_of(conn.address),
                        "reputation": rep.model_dump()}

        payload.update(asyncio.run(chain()))
    lines = [f"{k}: {v}" for k, v in payload.items() if k != "tasks"]
    lines += [f"task {t['task_id']}: {t['phase']} {t['role'] or ''} {t['reason']}"
              for t in tasks]
    _emit(as_json, payload, lines)


@app.command()
def withdraw(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Withdraw every credit (rewards and returned bonds) to the miner's wallet."""
    settings = _settings(ctx)
    account = unlock_account(settings, environment())

    async def go() -> dict[str, int]:
        async with connect(settings, account) as conn:
            return await withdraw_all(conn)

    withdrawn = asyncio.run(go())
    _emit(as_json, {"withdrawn_wei": withdrawn},
          [f"withdrew {wei} wei of {token}" for token, wei in withdrawn.items()]
          or ["nothing to withdraw"])


@app.command()
def run(ctx: typer.Context) -> None:
    """Serve HTTP and follow the market: claim, form groups, … until SIGINT/SIGTERM."""
    settings = _settings(ctx)
    account = unlock_account(settings, environment())

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_miner(settings, account, stop)

    asyncio.run(go())
