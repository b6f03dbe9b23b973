"""``manta-node``: the local devnet, contract deployment, keystores and the chain demo.

Every command parses its options, calls one library function and renders the result (rich
for people, ``--json`` for machines). Errors are handled once, by :class:`_ErrorHandlingGroup`:
a :class:`~node.errors.MantaError` prints its message to stderr and exits with code 1;
usage errors exit with code 2 (click's convention). Passwords and keys never come from
argv: ``--password-env NAME``, ``--password-file PATH`` or a prompt; ``--key-file PATH`` or
a prompt.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from node.chain.deploy import deploy_market
from node.chain.indexer import EventHandler, Indexer, IndexerConfig, RpcBlockSource, decoding
from node.chain.market import TaskMarket
from node.chain.models import ChainEvent, Deployment
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import TxSender
from node.cli_errors import MantaErrorGroup
from node.config import NodeSettings, environment, load_settings
from node.devnet import Devnet, DevnetConfig
from node.errors import ConfigError
from node.identity import keystore
from node.identity.passwords import PasswordSource

logger = logging.getLogger(__name__)


_ErrorHandlingGroup = MantaErrorGroup


app = typer.Typer(cls=_ErrorHandlingGroup, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="MANTA node tools: local devnet, deployment, keystores, demo.")
keys_app = typer.Typer(cls=_ErrorHandlingGroup, no_args_is_help=True,
                       help="Create, import and list encrypted keystores.")
app.add_typer(keys_app, name="keys")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object for machines.")]
PasswordEnvOpt = Annotated[
    str | None, typer.Option(help="Name of an environment variable holding the password.")
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option(help="File whose first line is the password.")
]
DirOpt = Annotated[Path | None, typer.Option("--dir", help="Keystore folder.")]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML settings file.")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING…")] = None,
) -> None:
    """MANTA node tools: devnet, deploy, keys, demo."""
    settings = load_settings(config, log_level=log_level)
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = config


def _settings(ctx: typer.Context, **overrides: Any) -> NodeSettings:
    config_file: Path | None = ctx.find_root().obj
    return load_settings(config_file, **overrides)


def _emit(as_json: bool, payload: dict[str, Any], human: Callable[[Console], None]) -> None:
    if as_json:
        typer.echo(json.dumps(payload, sort_keys=True))
    else:
        human(Console())


def _password(settings: NodeSettings, confirm: bool = False) -> SecretStr:
    source = PasswordSource(settings.identity.password_env, settings.identity.password_file)
    return source.resolve(environment(), confirm=confirm)


# ---- keys ----------------------------------------------------------------------------------


def _kdf(settings: NodeSettings) -> keystore.KdfParams:
    return keystore.KdfParams(settings.identity.kdf, settings.identity.kdf_work)


def _render_key(info: keystore.KeystoreInfo) -> Callable[[Console], None]:
    return lambda c: c.print(f"[bold]{info.name}[/] {info.address} → {info.path}")


@keys_app.command("new")
def keys_new(ctx: typer.Context, name: str, directory: DirOpt = None,
             password_env: PasswordEnvOpt = None, password_file: PasswordFileOpt = None,
             as_json: JsonOpt = False) -> None:
    """Create a new random key in an encrypted keystore."""
    settings = _settings(ctx, identity={"keystore_dir": directory, "password_env": password_env,
                                        "password_file": password_file})
    info = keystore.create(settings.identity.keystore_dir, _password(settings, confirm=True),
                           name, kdf=_kdf(settings))
    _emit(as_json, _key_json(info), _render_key(info))


@keys_app.command("import")
def keys_import(ctx: typer.Context, name: str,
                key_file: Annotated[Path | None, typer.Option(
                    help="File holding the hex private key (else a hidden prompt).")] = None,
                directory: DirOpt = None, password_env: PasswordEnvOpt = None,
                password_file: PasswordFileOpt = None, as_json: JsonOpt = False) -> None:
    """Import an existing private key into an encrypted keystore."""
    settings = _settings(ctx, identity={"keystore_dir": directory, "password_env": password_env,
                                        "password_file": password_file})
    if key_file is not None:
        secret = keystore.read_private_key_file(key_file)
    else:
        secret = SecretStr(getpass.getpass("Private key (hex): "))
    info = keystore.import_key(settings.identity.keystore_dir, secret,
                               _password(settings, confirm=True), name, kdf=_kdf(settings))
    _emit(as_json, _key_json(info), _render_key(info))


@keys_app.command("list")
def keys_list(ctx: typer.Context, directory: DirOpt = None, as_json: JsonOpt = False) -> None:
    """List the keystores of a folder (no password needed)."""
    settings = _settings(ctx, identity={"keystore_dir": directory})
    found = keystore.list_keystores(settings.identity.keystore_dir)

    def human(console: Console) -> None:
        table = Table()
        table.add_column("name", no_wrap=True)
        table.add_column("address", no_wrap=True)
        table.add_column("path", overflow="fold")
        for info in found:
            table.add_row(info.name, info.address, str(info.path))
        console.print(table)

    _emit(as_json, {"keystores": [_key_json(i) for i in found]}, human)


def _key_json(info: keystore.KeystoreInfo) -> dict[str, Any]:
    return {"name": info.name, "address": info.address, "path": str(info.path)}


# ---- deploy --------------------------------------------------------------------------------


async def _deploy(rpc_url: str, account: LocalAccount, chain_id: int | None, with_token: bool,
                  timeout_s: float) -> Deployment:
    """Connect (checking the chain id before anything is signed), then deploy."""
    rpc = await RpcPool.create(RpcConfig(urls=(rpc_url,), chain_id=chain_id, timeout_s=timeout_s))
    try:
        sender = await TxSender.create(rpc, account)
        return await deploy_market(sender, with_token=with_token, rpc_url=rpc_url)
    finally:
        await rpc.close()


@app.command()
def deploy(ctx: typer.Context,
           rpc_url: Annotated[str, typer.Option(help="JSON-RPC endpoint of the chain.")],
           keystore_ref: Annotated[str | None, typer.Option(
               "--keystore", help="Keystore path, name or address of the deployer "
               "(default: the identity.keystore setting).")] = None,
           chain_id: Annotated[int | None, typer.Option(
               help="Refuse to deploy unless the endpoint serves this chain.")] = None,
           deployment_file: Annotated[Path | None, typer.Option()] = None,
           token: Annotated[bool, typer.Option(help="Also deploy MantaTestToken.")] = False,
           password_env: PasswordEnvOpt = None, password_file: PasswordFileOpt = None,
           as_json: JsonOpt = False) -> None:
    """Deploy TaskMarket to any EVM chain and write the deployment file."""
    settings = _settings(ctx, chain={"deployment_file": deployment_file},
                         identity={"password_env": password_env, "password_file": password_file})
    reference = keystore_ref or settings.identity.keystore
    if reference is None:
        raise ConfigError("no deployer keystore: pass --keystore or set MANTA_IDENTITY__KEYSTORE")
    path = keystore.resolve_keystore(reference, settings.identity.keystore_dir)
    account = keystore.unlock(path, _password(settings))
    deployment = asyncio.run(_deploy(rpc_url, account, chain_id, token, settings.chain.timeout_s))
    deployment.save(settings.chain.deployment_file)
    payload = deployment.model_dump(mode="json")
    _emit(as_json, payload, lambda c: c.print(
        f"TaskMarket at [bold]{deployment.task_market}[/] on chain {deployment.chain_id} "
        f"(block {deployment.start_block}) → {settings.chain.deployment_file}"))


# ---- watch ---------------------------------------------------------------------------------


async def _watch(deployment: Deployment, rpc_url: str, settings: NodeSettings,
                 cursor_file: Path | None, follow: bool, emit: EventHandler) -> None:
    """Feed the market's events to ``emit`` through the indexer; without ``follow``, stop
    once caught up with the confirmed head. No cursor file = replay from the deploy block."""
    rpc = await RpcPool.create(RpcConfig(urls=(rpc_url,), chain_id=deployment.chain_id,
                                         timeout_s=settings.chain.timeout_s))
    try:
        market = await TaskMarket.create(rpc, deployment.task_market,
                                         start_block=deployment.start_block)
        source = RpcBlockSource(rpc, deployment.task_market)
        config = IndexerConfig.from_settings(settings.indexer, deployment.start_block)
        handler = decoding(market.decode_logs, emit)
        path = cursor_file or Path(":memory:")
        source_id = f"{deployment.chain_id}:{deployment.task_market}"
        if not follow:
            indexer = await Indexer.open(source, path, handler, config, source_id)
            while not await indexer.poll_once():
                pass
            await indexer.shutdown()
            return
        indexer = await Indexer.start(source, path, handler, config, source_id)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(indexer.wait())
        stopper = asyncio.create_task(stop.wait())
        done, pending = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await indexer.shutdown()
        if waiter in done:
            waiter.result()  # re-raises what stopped the indexer
    finally:
        await rpc.close()


@app.command()
def watch(ctx: typer.Context,
          deployment_file: Annotated[Path | None, typer.Option()] = None,
          rpc_url: Annotated[str | None, typer.Option(
              help="Default: the deployment file's rpc_url.")] = None,
          confirmations: Annotated[int | None, typer.Option()] = None,
          cursor_file: Annotated[Path | None, typer.Option(
              help="Resume from (and save to) this SQLite cursor.")] = None,
          follow: Annotated[bool, typer.Option(help="Keep watching until Ctrl-C.")] = True,
          as_json: JsonOpt = False) -> None:
    """Print the TaskMarket's confirmed events (and removals after a reorg) as they come."""
    settings = _settings(ctx, chain={"deployment_file": deployment_file},
                         indexer={"confirmations": confirmations})
    deployment = Deployment.load(settings.chain.deployment_file)
    console = Console()

    async def emit(event: ChainEvent, removed: bool) -> None:
        fields = event.model_dump(mode="json")
        if as_json:
            typer.echo(json.dumps({"event": type(event).__name__, "removed": removed, **fields},
                                  sort_keys=True))
            return
        where = f"block {event.block_number}"
        sign = "[red]- removed[/]" if removed else "[green]+[/]"
        args = {k: v for k, v in fields.items()
                if k not in ("block_number", "block_hash", "tx_hash", "log_index")}
        console.print(f"{sign} {type(event).__name__} {where} {args}")

    asyncio.run(_watch(deployment, rpc_url or deployment.rpc_url, settings, cursor_file,
                       follow, emit))


# ---- devnet and demo -----------------------------------------------------------------------


def _devnet_config(ctx: typer.Context, port: int | None, block_time_s: int | None,
                   accounts: int | None, folder: Path | None,
                   deployment_file: Path | None) -> DevnetConfig:
    settings = _settings(
        ctx, chain={"deployment_file": deployment_file},
        devnet={"port": port, "block_time_s": block_time_s, "accounts": accounts,
                "folder": folder})
    return DevnetConfig.from_settings(settings, write_keystores=True)


def _devnet_json(devnet: Devnet) -> dict[str, Any]:
    return {
        "rpc_url": devnet.rpc_url, "chain_id": devnet.chain_id, "anvil_pid": devnet.pid,
        "task_market": devnet.deployment.task_market, "token": devnet.deployment.token,
        "start_block": devnet.deployment.start_block,
        "deployment_file": str(devnet.config.deployment_file),
        "accounts": [a.address for a in devnet.accounts],
        "keystores": [str(k.path) for k in devnet.keystores],
        "password_file": str(devnet.password_file) if devnet.password_file else None,
    }


async def _serve_devnet(config: DevnetConfig, render: Callable[[Devnet], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with await Devnet.start(config) as devnet:
        render(devnet)
        await stop.wait()
        logger.info("devnet stopping on signal")


@app.command()
def devnet(ctx: typer.Context,
           port: Annotated[int | None, typer.Option(help="Port (0 = a free one).")] = None,
           block_time: Annotated[int | None, typer.Option(
               help="Seconds between blocks (default: a block per transaction).")] = None,
           accounts: Annotated[int | None, typer.Option(help="Dev accounts.")] = None,
           folder: Annotated[Path | None, typer.Option(
               help="Where the anvil log and dev keystores go.")] = None,
           deployment_file: Annotated[Path | None, typer.Option()] = None,
           as_json: JsonOpt = False) -> None:
    """Run a local anvil with the contracts deployed until Ctrl-C (or SIGTERM)."""
    config = _devnet_config(ctx, port, block_time, accounts, folder, deployment_file)

    def render(net: Devnet) -> None:
        info = _devnet_json(net)
        _emit(as_json, info, lambda c: c.print(
            f"devnet [bold]{net.rpc_url}[/] chain {net.chain_id}\n"
            f"  TaskMarket {info['task_market']}\n  MantaTestToken {info['token']}\n"
            f"  deployment file {info['deployment_file']}\n"
            f"  dev keystores in {net.folder / 'keystores'} (password in {net.password_file})\n"
            "Ctrl-C to stop."))
        sys.stdout.flush()

    asyncio.run(_serve_devnet(config, render))


@app.command()
def demo(ctx: typer.Context,
         quick: Annotated[bool, typer.Option(
             help="Digits and a smaller budget (about a minute).")] = False,
         stereo: Annotated[bool, typer.Option(
             help="The stereo flavour: a stereo supernet on procedural pairs, EPE verified "
                  "on the client's own pairs.")] = False,
         chain_only: Annotated[bool, typer.Option(
             help="Only the chain part: post, claim, submit, accept (which pays); no training.")]
         = False,
         folder: Annotated[Path | None, typer.Option(
             help="Working folder (default: a temporary one, removed at the end).")] = None,
         as_json: JsonOpt = False) -> None:
    """Run the whole marketplace on a fresh devnet: two miner daemons train a task a client
    posted, verifies and accepts; the last line is one JSON object. Ctrl-C stops it all."""
    from node.demo import MarketDemoConfig, run_demo, run_marketplace, until_signal

    settings = _settings(ctx)
    if chain_only:
        config = DevnetConfig.from_settings(settings, folder=folder, deployment_file=None)
        summary = asyncio.run(run_demo(config))
        if not as_json:
            _render_chain_demo(summary)
        typer.echo(json.dumps(summary.as_json(), sort_keys=True))
        return
    devnet_config = DevnetConfig.from_settings(settings, deployment_file=None)
    try:
        market = asyncio.run(until_signal(run_marketplace(
            MarketDemoConfig(devnet=devnet_config, quick=quick, stereo=stereo,
                             folder=folder))))
    except (KeyboardInterrupt, asyncio.CancelledError):
        typer.echo("demo stopped; every process it started was stopped", err=True)
        raise typer.Exit(130) from None
    if not as_json:
        _render_market_demo(market)
    typer.echo(json.dumps(market.as_json(), sort_keys=True))


def _render_chain_demo(summary: Any) -> None:
    console = Console()
    console.print(f"task {summary.task_id} on {summary.task_market}: [bold]{summary.state}[/]")
    for step, gas in summary.gas_by_step.items():
        console.print(f"  {step:<14} {gas:>9,} gas")
    for account, wei in summary.paid_wei.items():
        console.print(f"  {account} was paid {wei} wei")


def _fmt(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.4f}{unit}"


def _render_market_demo(s: Any) -> None:
    console = Console()
    console.print(f"task {s.task_id} ({s.dataset}): [bold]{s.state}[/] in {s.seconds:.1f} s")
    stereo = s.metric == "epe"
    if stereo:
        console.print(f"  data: miners rendered the task's procedural scenes; the client "
                      f"verified on {s.eval_images:,} pairs of its own ({s.eval_set})")
        measured, claimed = _fmt(s.epe, " px"), _fmt(s.claimed_epe, " px")
        largest_metric, front_metric = _fmt(s.largest_epe, " px"), _fmt(s.front_max_epe, " px")
    else:
        console.print(f"  data: miners trained on {s.train_images:,} images from "
                      f"{s.dataset_url}; the client held out the other {s.eval_images:,}")
        measured, claimed = _fmt(s.accuracy), _fmt(s.claimed_accuracy)
        largest_metric, front_metric = _fmt(s.largest_accuracy), _fmt(s.front_max_accuracy)
    name = "EPE" if stereo else "accuracy"
    console.print(f"  chosen network: {name} {measured} on the client's held-out data "
                  f"({claimed} claimed), {s.flops:,} FLOPs (limit {s.max_flops:,})")
    largest = f"{s.largest_flops:,} FLOPs" if s.largest_flops else "FLOPs not reported"
    share = f" (the chosen one needs {s.flops / s.largest_flops:.0%})" if s.largest_flops else ""
    console.print(f"  largest network (full supernet): {name} {largest_metric} on the "
                  f"miners' validation split, {largest}{share}")
    console.print(f"  Pareto front: {s.front_size} networks, the largest {s.front_max_flops:,} "
                  f"FLOPs ({name} {front_metric})")
    for url, sent in s.grad_bytes_sent.items():
        console.print(f"  gradient exchange: {url} sent {sent:,} bytes")
    console.print(f"  monitor: {s.monitor_url}")
    console.print("  miners (leader first):")
    for address, url in sorted(s.miner_urls.items(), key=lambda kv: kv[0] != s.leader):
        console.print(f"    {address} {url}  progress {url}/tasks/{s.task_id}/progress  "
                      f"metrics {url}/metrics")
    table = Table(title="time per stage")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in s.stage_s.items():
        table.add_row(stage, f"{seconds:.1f}")
    console.print(table)
    gas = Table(title=f"gas per call (total {s.total_gas:,})")
    gas.add_column("call")
    gas.add_column("gas", justify="right")
    for call, used in s.gas_by_call.items():
        gas.add_row(f"{call} x{len(used)}", ", ".join(f"{g:,}" for g in used))
    console.print(gas)
    money = Table(title="balances (wei)")
    for column in ("account", "before", "after", "change"):
        money.add_column(column, justify="right" if column != "account" else "left")
    for role, before in s.balances_before_wei.items():
        after = s.balances_after_wei.get(role, before)
        money.add_row(role, f"{before:,}", f"{after:,}", f"{after - before:+,}")
    console.print(money)


def main() -> int:
    """Console-script entry point (``manta-node``)."""
    try:
        app(prog_name="manta-node")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
