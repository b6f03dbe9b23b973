"""``manta``: the client's command line (submit, watch, monitor, fetch, verify, settle, withdraw).

Every command parses its options, calls one function of the API object and renders the
model it returns (rich for people, ``--json`` for machines). The API object is
:func:`default_api` unless the caller passes another one as the Click context object
(tests do: ``CliRunner().invoke(app, args, obj=fake)``).

Errors are handled once, by :class:`_ErrorHandlingGroup`: a
:class:`~node.errors.MantaError` prints ``error: <message>`` on stderr and exits with 1;
usage errors exit with 2 (Click's convention). Chain options (``--rpc-url``,
``--deployment``, ``--keystore``, password source) are taken from the flags, else the
environment (``MANTA_CHAIN__RPC_URLS``…), else the TOML config file, via
:func:`node.config.load_settings`. Keys and passwords never come from argv.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import typer
from pydantic import BaseModel, SecretStr
from rich.console import Console
from rich.live import Live

from client import render
from client.models import WatchUpdate
from client.session import ClientConfig
from client.units import parse_amount_wei, parse_duration_s
from node.chain.models import ZERO_ADDRESS
from node.cli_errors import MantaOrOSErrorGroup
from node.config import NodeSettings, environment, load_settings
from node.identity import keystore
from node.identity.passwords import PasswordSource

logger = logging.getLogger(__name__)


_ErrorHandlingGroup = MantaOrOSErrorGroup


def default_api() -> Any:
    """The real API: the functions of :mod:`client.api`, ``watch`` and ``datasets``."""
    from client import api, datasets, watch

    return SimpleNamespace(
        submit_task=api.submit_task, task_status=api.task_status, list_tasks=api.list_tasks,
        accept_task=api.accept_task, dispute_task=api.dispute_task,
        cancel_task=api.cancel_task, expire_task=api.expire_task, withdraw=api.withdraw,
        fetch_result=api.fetch_result, verify_result=api.verify_result,
        watch_task=watch.watch_task, pack_dataset=datasets.pack_dataset,
    )


@dataclass
class _State:
    api: Any
    settings: NodeSettings
    config: ClientConfig


def _kw(**options: Any) -> dict[str, Any]:
    return dict(add_completion=False, no_args_is_help=True, cls=_ErrorHandlingGroup, **options)


app = typer.Typer(pretty_exceptions_enable=False, **_kw(help="MANTA client: post AutoML tasks, "
                                                         "watch them, fetch and check results."))
task_app = typer.Typer(**_kw(help="Submit, inspect, settle and fetch tasks."))
keys_app = typer.Typer(**_kw(help="Create, import and list encrypted keystores."))
data_app = typer.Typer(**_kw(help="Pack and serve custom datasets (and specs)."))
app.add_typer(task_app, name="task")
app.add_typer(keys_app, name="keys")
app.add_typer(data_app, name="data")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
TaskId = Annotated[int, typer.Argument(min=1, help="The task id.")]


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML settings file.")] = None,
    rpc_url: Annotated[list[str] | None, typer.Option(
        help="JSON-RPC endpoint (repeat for fail-over; default: settings, then the "
             "deployment file's).")] = None,
    deployment: Annotated[Path | None, typer.Option(help="Deployment JSON file.")] = None,
    keystore_ref: Annotated[str | None, typer.Option(
        "--keystore", help="Keystore path, name or address.")] = None,
    keystore_dir: Annotated[Path | None, typer.Option(help="Keystore folder.")] = None,
    password_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the keystore password.")] = None,
    password_file: Annotated[Path | None, typer.Option(
        help="File whose first line is the keystore password.")] = None,
    spec_store: Annotated[Path | None, typer.Option(
        help="Folder where submitted specs are published.")] = None,
    spec_base_url: Annotated[str | None, typer.Option(
        help="Public URL of the spec store (`manta data serve`); default: file:// URIs.")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING…")] = None,
) -> None:
    """MANTA client."""
    settings = load_settings(
        config, log_level=log_level,
        chain={"rpc_urls": rpc_url or None, "deployment_file": deployment},
        identity={"keystore": keystore_ref, "keystore_dir": keystore_dir,
                  "password_env": password_env, "password_file": password_file})
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = ctx.obj if ctx.obj is not None else default_api()
    client_config = ClientConfig.from_settings(settings, spec_store=spec_store,
                                               spec_base_url=spec_base_url)
    ctx.obj = _State(api, settings, client_config)


def _state(ctx: typer.Context) -> _State:
    state = ctx.find_root().obj
    assert isinstance(state, _State)
    return state


def _emit(as_json: bool, model: BaseModel, human: Any) -> None:
    if as_json:
        typer.echo(model.model_dump_json())
    else:
        human(Console(), model)


# ---- task --------------------------------------------------------------------------------------


@task_app.command("submit")
def task_submit(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="SPEC.toml (or .json).")],
    reward: Annotated[str, typer.Option(help="Reward: 0.5eth, 500gwei, 12wei or wei.")],
    arbiter: Annotated[str, typer.Option(help="Arbiter address (not you).")],
    slots: Annotated[int, typer.Option(min=1, max=32, help="Miner slots.")] = 1,
    bond: Annotated[str | None, typer.Option(
        help="Bond per slot, same units as --reward (default: the market's floor, 1% of a "
             "slot's share).")] = None,
    token: Annotated[str, typer.Option(help="ERC-20 address (default: native coin).")] =
        ZERO_ADDRESS,
    claim_window: Annotated[str, typer.Option(help="90s, 30m, 2h, 1d…")] = "1h",
    work_window: Annotated[str, typer.Option()] = "1d",
    review_window: Annotated[str, typer.Option()] = "1d",
    arbitration_window: Annotated[str, typer.Option()] = "1d",
    validation_hash: Annotated[str | None, typer.Option(
        help="0x hash of your hidden validation set.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be posted; post nothing.")] =
        False,
    as_json: JsonOpt = False,
) -> None:
    """Validate SPEC, show its canonical hash, cost and deadlines, publish it and post."""
    from client.api import SubmitRequest

    state = _state(ctx)
    request = SubmitRequest(
        spec_path=spec, reward_wei=parse_amount_wei(reward),
        bond_wei=None if bond is None else parse_amount_wei(bond),
        token=token, slots=slots, claim_window_s=parse_duration_s(claim_window),
        work_window_s=parse_duration_s(work_window),
        review_window_s=parse_duration_s(review_window),
        arbitration_window_s=parse_duration_s(arbitration_window), arbiter=arbiter,
        validation_hash=validation_hash, dry_run=dry_run)
    outcome = asyncio.run(state.api.submit_task(state.config, request))
    _emit(as_json, outcome, render.submit)


@task_app.command("status")
def task_status(ctx: typer.Context, task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Chain state, group, deadlines and result of a task."""
    state = _state(ctx)
    _emit(as_json, asyncio.run(state.api.task_status(state.config, task_id)), render.task_info)


@task_app.command("list")
def task_list(
    ctx: typer.Context,
    client: Annotated[str | None, typer.Option(help="Only tasks posted by this address.")] =
        None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The newest tasks on the market."""
    state = _state(ctx)
    listing = asyncio.run(state.api.list_tasks(state.config, client, limit))
    _emit(as_json, listing, render.task_list)


@task_app.command("accept")
def task_accept(ctx: typer.Context, task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Accept a submitted result: the group is paid."""
    state = _state(ctx)
    _emit(as_json, asyncio.run(state.api.accept_task(state.config, task_id)), render.tx)


@task_app.command("dispute")
def task_dispute(
    ctx: typer.Context, task_id: TaskId,
    reason: Annotated[str, typer.Option(help="Why (its keccak256 goes on chain).")],
    as_json: JsonOpt = False,
) -> None:
    """Dispute a submitted result inside the review window."""
    state = _state(ctx)
    _emit(as_json, asyncio.run(state.api.dispute_task(state.config, task_id, reason)), render.tx)


@task_app.command("cancel")
def task_cancel(ctx: typer.Context, task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Cancel an open task nobody has claimed; the reward is paid back at once."""
    state = _state(ctx)
    _emit(as_json, asyncio.run(state.api.cancel_task(state.config, task_id)), render.tx)


@task_app.command("expire")
def task_expire(ctx: typer.Context, task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Expire a task past its claim or work deadline (refund, bonds slashed if running)."""
    state = _state(ctx)
    _emit(as_json, asyncio.run(state.api.expire_task(state.config, task_id)), render.tx)


@task_app.command("fetch")
def task_fetch(
    ctx: typer.Context, task_id: TaskId,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (new or empty).")],
    as_json: JsonOpt = False,
) -> None:
    """Download and hash-check the result from any group member that has it."""
    state = _state(ctx)
    outcome = asyncio.run(state.api.fetch_result(state.config, task_id, out))
    _emit(as_json, outcome, render.fetched)


@task_app.command("verify")
def task_verify(
    ctx: typer.Context, task_id: TaskId,
    data: Annotated[Path | None, typer.Option(
        help="Your held-out data (.npz): x and y for classification (accuracy); left, right "
             "and disparity for stereo (EPE).")] = None,
    result: Annotated[Path | None, typer.Option(
        help="A folder from `task fetch` (default: fetch into a temporary one).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-check a result against the chain and compare its claimed metrics; exit 1 on failure."""
    state = _state(ctx)
    report = asyncio.run(state.api.verify_result(state.config, task_id, result, data))
    _emit(as_json, report, render.verified)
    if not report.ok:
        raise typer.Exit(1)


@task_app.command("watch")
def task_watch(
    ctx: typer.Context, task_id: TaskId,
    poll: Annotated[float, typer.Option(help="Seconds between chain polls.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Live progress from the group plus chain events; exits when the task settles."""
    state = _state(ctx)
    if as_json:
        def emit(update: WatchUpdate) -> None:
            typer.echo(update.model_dump_json(exclude={"info"}))

        info = asyncio.run(state.api.watch_task(state.config, task_id, emit, poll))
        typer.echo(info.model_dump_json())
        return
    view = render.WatchView(task_id)
    with Live(view, console=Console(), refresh_per_second=4, transient=False) as live:
        def show(update: WatchUpdate) -> None:
            view.update(update)
            live.refresh()

        info = asyncio.run(state.api.watch_task(state.config, task_id, show, poll))
    render.task_info(Console(), info)


@task_app.command("monitor")
def task_monitor(
    ctx: typer.Context, task_id: TaskId,
    host: Annotated[str, typer.Option(help="Address to serve the page on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: a free one).")] = 8790,
    as_json: JsonOpt = False,
) -> None:
    """Serve the task's monitor page (the group's live training, timeline, result) until Ctrl-C."""
    from client.monitor import serve_monitor

    config = _state(ctx).config
    _serve_until_stopped(
        lambda stop, ready: serve_monitor(config, task_id, host, port, stop, ready),
        as_json, {"task_id": task_id}, f"monitor of task {task_id}")


@app.command("withdraw")
def withdraw(
    ctx: typer.Context,
    token: Annotated[str, typer.Option(help="Token address (default: native coin).")] =
        ZERO_ADDRESS,
    as_json: JsonOpt = False,
) -> None:
    """Withdraw a credit the market could not pay you directly (payouts and refunds are
    pushed inside the settling transaction; a transfer that fails is credited instead)."""
    state = _state(ctx)
    _emit(as_json, asyncio.run(state.api.withdraw(state.config, token)), render.withdrawn)


# ---- keys --------------------------------------------------------------------------------------


def _password(state: _State, confirm: bool) -> SecretStr:
    source = PasswordSource(state.config.password_env, state.config.password_file)
    return source.resolve(environment(), confirm=confirm)


def _kdf(state: _State) -> keystore.KdfParams:
    return keystore.KdfParams(state.settings.identity.kdf, state.settings.identity.kdf_work)


def _key_line(as_json: bool, info: keystore.KeystoreInfo) -> None:
    if as_json:
        typer.echo(json.dumps({"name": info.name, "address": info.address,
                               "path": str(info.path)}))
    else:
        Console().print(f"[bold]{info.name}[/] {info.address} → {info.path}")


@keys_app.command("new")
def keys_new(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Create a random key in an encrypted keystore (password from the configured source)."""
    state = _state(ctx)
    info = keystore.create(state.config.keystore_dir, _password(state, True), name,
                           kdf=_kdf(state))
    _key_line(as_json, info)


@keys_app.command("import")
def keys_import(
    ctx: typer.Context, name: str,
    key_file: Annotated[Path | None, typer.Option(
        help="File holding the hex private key (else a hidden prompt).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a private key (from a file or a hidden prompt, never argv)."""
    state = _state(ctx)
    secret = (keystore.read_private_key_file(key_file) if key_file is not None
              else SecretStr(getpass.getpass("Private key (hex): ")))
    info = keystore.import_key(state.config.keystore_dir, secret, _password(state, True), name,
                               kdf=_kdf(state))
    _key_line(as_json, info)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The keystores in the keystore folder (no password needed)."""
    found = keystore.list_keystores(_state(ctx).config.keystore_dir)
    if as_json:
        typer.echo(json.dumps({"keystores": [
            {"name": i.name, "address": i.address, "path": str(i.path)} for i in found]}))
        return
    for info in found:
        _key_line(False, info)


# ---- data --------------------------------------------------------------------------------------


@data_app.command("pack")
def data_pack(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Image-folder tree, x.npy/y.npy folder or .npz")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output .npz.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pack a dataset into the .npz format a spec references, and print its sha256."""
    state = _state(ctx)
    target = out or source.with_name(source.stem + ".manta.npz")
    _emit(as_json, state.api.pack_dataset(source, target), render.packed)


@data_app.command("serve")
def data_serve(
    folder: Annotated[Path, typer.Argument(help="Folder to serve (specs, packed datasets).")],
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8700,
    as_json: JsonOpt = False,
) -> None:
    """Serve a folder's files over HTTP until Ctrl-C (miners check every hash)."""
    from client.serve import serve_folder

    _serve_until_stopped(lambda stop, ready: serve_folder(folder, host, port, stop, ready),
                         as_json, {"folder": str(folder)}, f"serving {folder}")


def _serve_until_stopped(
    serve: Callable[[asyncio.Event, Callable[[str], None]], Awaitable[None]],
    as_json: bool, fields: dict[str, Any], what: str,
) -> None:
    """Run ``serve(stop, ready)`` until SIGINT/SIGTERM; ``ready(url)`` prints where it serves
    (one JSON object with ``fields`` under ``--json``)."""

    async def run() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            if as_json:
                typer.echo(json.dumps({"url": url, **fields}))
            else:
                Console().print(f"{what} at [bold]{url}[/] (Ctrl-C to stop)")
            sys.stdout.flush()

        await serve(stop, ready)

    asyncio.run(run())


def main() -> int:
    """Console-script entry point (``manta``)."""
    try:
        app(prog_name="manta")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
