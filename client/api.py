"""The client API: one async function per CLI command, each returning a model.

The CLI parses, calls one of these, and renders what comes back; tests can substitute a
fake object with the same function names. Every function that sends a transaction checks
what it can first (spec, state, balance via the sender's pre-flight) so that bad input
raises a :class:`~node.errors.MantaError` subclass and changes nothing on chain.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import aiohttp
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, ValidationError

from client import specs
from client.errors import ClientError, NotConfigured, OutputExists, WrongTaskState
from client.models import (
    FetchOutcome,
    MemberInfo,
    SubmitOutcome,
    SubmitPlan,
    TaskInfo,
    TaskList,
    TaskRow,
    TxOutcome,
    VerifyReport,
    WithdrawOutcome,
)
from client.session import ClientConfig, Connection, connect
from client.transfer import Member, download_artifact, fetch_manifest
from client.verify import (
    ARCH_FILE,
    MANIFEST_FILE,
    PROGRAM_FILE,
    PROGRAM_KEY,
    WEIGHTS_FILE,
    verify_folder,
)
from node.chain.models import (
    ZERO_ADDRESS,
    TaskParams,
    TaskView,
    TxReceipt,
    checksum_address,
    min_bond_wei,
)
from node.documents.spec import TaskSpec

logger = logging.getLogger(__name__)

ZERO_ROOT = "0x" + "00" * 32
#: The states each command needs (checked before anything is sent, for a clear message).
NEEDED_STATES = {
    "accept": ("SUBMITTED",), "dispute": ("SUBMITTED",), "cancel": ("OPEN",),
    "expire": ("OPEN", "RUNNING"),
}


class SubmitRequest(BaseModel):
    """What ``task submit`` was asked for (amounts already parsed to wei)."""

    spec_path: Path
    reward_wei: int
    token: str = ZERO_ADDRESS
    bond_wei: int | None = None  # None: the market's floor (min_bond_wei)
    slots: int = 1
    claim_window_s: int = 3600
    work_window_s: int = 86400
    review_window_s: int = 86400
    arbitration_window_s: int = 86400
    arbiter: str | None = None
    validation_hash: str | None = None
    dry_run: bool = False

    model_config = ConfigDict(frozen=True)


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


async def _chain_time(conn: Connection) -> int:
    return int((await conn.rpc.get_block("latest"))["timestamp"])


# ---- submit ----------------------------------------------------------------------------------


def task_params(request: SubmitRequest, spec: TaskSpec, arbiter: str) -> TaskParams:
    """The contract's parameters; out-of-range values are refused naming the field."""
    validation = request.validation_hash or _hex(keccak(b""))
    try:
        return TaskParams(
            token=request.token, reward_wei=request.reward_wei,
            bond_wei=min_bond_wei(request.reward_wei, request.slots)
            if request.bond_wei is None else request.bond_wei,
            slots=request.slots, claim_window_s=request.claim_window_s,
            work_window_s=request.work_window_s, review_window_s=request.review_window_s,
            arbitration_window_s=request.arbitration_window_s, arbiter=arbiter,
            spec_hash=spec.spec_hash(), validation_hash=validation,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                             for err in exc.errors())
        raise ClientError(f"invalid task parameters: {problems}") from None


def _plan(params: TaskParams, uri: str, client: str, now: int) -> SubmitPlan:
    claim_deadline = now + params.claim_window_s
    return SubmitPlan(
        spec_hash=_hex(params.spec_hash), spec_uri=uri, token=params.token,
        reward_wei=params.reward_wei, bond_wei=params.bond_wei, slots=params.slots,
        claim_window_s=params.claim_window_s, work_window_s=params.work_window_s,
        review_window_s=params.review_window_s,
        arbitration_window_s=params.arbitration_window_s, arbiter=params.arbiter,
        validation_hash=_hex(params.validation_hash), client=client,
        claim_deadline=claim_deadline,
        latest_work_deadline=claim_deadline + params.work_window_s,
        escrow_wei=params.reward_wei,
    )


async def submit_task(config: ClientConfig, request: SubmitRequest) -> SubmitOutcome:
    """Validate the spec and parameters, publish the spec, post the task.

    Everything that can be checked off chain is checked before the keystore is unlocked;
    the spec file is published only right before posting and removed again if the post
    fails, so a refused submission leaves nothing behind.
    """
    spec = specs.load_spec_file(request.spec_path)
    if request.arbiter is None:
        raise NotConfigured(what="the arbiter", hint="pass --arbiter ADDRESS")
    params = task_params(request, spec, checksum_address(request.arbiter))
    uri = specs.spec_uri(spec, config.spec_store, config.spec_base_url)
    async with connect(config, signer=True) as conn:
        assert conn.account is not None
        plan = _plan(params, uri, conn.account, await _chain_time(conn))
        if request.dry_run:
            return SubmitOutcome(plan=plan, posted=False)
        published = specs.publish_spec(spec, config.spec_store, config.spec_base_url)
        try:
            posted = await conn.market.post_task(params, published.uri)
        except BaseException:
            if published.created:
                published.path.unlink(missing_ok=True)
            raise
    logger.info("task posted task_id=%d spec_hash=%s", posted.task_id, plan.spec_hash)
    receipt = posted.receipt
    return SubmitOutcome(plan=plan, posted=True, task_id=posted.task_id,
                         tx_hash=_hex(receipt.tx_hash), block_number=receipt.block_number,
                         gas_used=receipt.gas_used, spec_path=published.path)


# ---- reading -----------------------------------------------------------------------------------


async def _members(conn: Connection, task_id: int) -> tuple[MemberInfo, ...]:
    addresses = await conn.market.members_of(task_id)
    members = [MemberInfo(slot=i, address=a, endpoint=await conn.market.endpoint_of(a))
               for i, a in enumerate(addresses)]
    return tuple(members)


async def _task_info(conn: Connection, task_id: int, view: TaskView | None = None) -> TaskInfo:
    view = view or await conn.market.get_task(task_id)
    start = conn.deployment.start_block
    posted = await conn.market.get_task_posted(start, "latest", task_id)
    results = await conn.market.get_result_submitted(start, "latest", task_id)
    root = _hex(view.result_root)
    return TaskInfo(
        task_id=task_id, state=view.state.name, client=view.client, token=view.token,
        reward_wei=view.reward_wei, bond_wei=view.bond_wei, slots=view.slots,
        claimed=view.claimed, arbiter=view.arbiter, claim_deadline=view.claim_deadline,
        work_deadline=view.work_deadline, settle_deadline=view.settle_deadline,
        spec_hash=_hex(view.spec_hash), result_root=None if root == ZERO_ROOT else root,
        spec_uri=posted[0].spec_uri if posted else "",
        result_uri=results[-1].result_uri if results else "",
        members=await _members(conn, task_id), chain_time=await _chain_time(conn),
    )


async def task_status(config: ClientConfig, task_id: int) -> TaskInfo:
    """State, deadlines, group (with endpoints) and result of one task."""
    async with connect(config) as conn:
        return await _task_info(conn, task_id)


async def list_tasks(config: ClientConfig, client: str | None = None,
                     limit: int = 50) -> TaskList:
    """The newest ``limit`` tasks (optionally only those posted by ``client``)."""
    wanted = checksum_address(client) if client else None
    async with connect(config) as conn:
        total = await conn.market.task_count()
        rows: list[TaskRow] = []
        for task_id in range(total, 0, -1):
            if len(rows) >= limit:
                break
            view = await conn.market.get_task(task_id)
            if wanted is None or view.client == wanted:
                rows.append(TaskRow(task_id=task_id, state=view.state.name, client=view.client,
                                    reward_wei=view.reward_wei, slots=view.slots,
                                    claimed=view.claimed))
    return TaskList(tasks=tuple(rows), total=total)


# ---- lifecycle calls ---------------------------------------------------------------------------


async def _require_state(conn: Connection, task_id: int, command: str) -> TaskView:
    view = await conn.market.get_task(task_id)
    needed = NEEDED_STATES[command]
    if view.state.name not in needed:
        raise WrongTaskState(task_id=task_id, state=view.state.name, command=command,
                             needed=" or ".join(needed))
    return view


async def _outcome(conn: Connection, task_id: int, action: str, receipt: TxReceipt) -> TxOutcome:
    state = await conn.market.state_of(task_id)
    return TxOutcome(task_id=task_id, action=action, tx_hash=_hex(receipt.tx_hash),
                     block_number=receipt.block_number, gas_used=receipt.gas_used,
                     state=state.name)


async def accept_task(config: ClientConfig, task_id: int) -> TxOutcome:
    async with connect(config, signer=True) as conn:
        await _require_state(conn, task_id, "accept")
        return await _outcome(conn, task_id, "accept", await conn.market.accept(task_id))


async def dispute_task(config: ClientConfig, task_id: int, reason: str) -> TxOutcome:
    """Dispute inside the review window; the reason's keccak256 goes on chain."""
    async with connect(config, signer=True) as conn:
        await _require_state(conn, task_id, "dispute")
        receipt = await conn.market.dispute(task_id, keccak(text=reason))
        return await _outcome(conn, task_id, "dispute", receipt)


async def cancel_task(config: ClientConfig, task_id: int) -> TxOutcome:
    async with connect(config, signer=True) as conn:
        await _require_state(conn, task_id, "cancel")
        return await _outcome(conn, task_id, "cancel", await conn.market.cancel(task_id))


async def expire_task(config: ClientConfig, task_id: int) -> TxOutcome:
    async with connect(config, signer=True) as conn:
        await _require_state(conn, task_id, "expire")
        return await _outcome(conn, task_id, "expire", await conn.market.expire(task_id))


async def withdraw(config: ClientConfig, token: str = ZERO_ADDRESS) -> WithdrawOutcome:
    """Pull this account's credit in ``token``; nothing is sent when there is none."""
    token = checksum_address(token)
    async with connect(config, signer=True) as conn:
        assert conn.account is not None
        credit = await conn.market.credit_of(conn.account, token)
        if credit == 0:
            return WithdrawOutcome(account=conn.account, token=token, amount_wei=0, tx_hash=None)
        receipt = await conn.market.withdraw(token)
        return WithdrawOutcome(account=conn.account, token=token, amount_wei=credit,
                               tx_hash=_hex(receipt.tx_hash))


# ---- results -----------------------------------------------------------------------------------


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExists(path=str(out_dir))


async def fetch_result(config: ClientConfig, task_id: int, out_dir: Path) -> FetchOutcome:
    """Download the manifest, weights and architecture from the group into ``out_dir``.

    Files land in a hidden sibling folder first and are moved into place only after every
    hash checked, so a refused or failed fetch leaves nothing at ``out_dir``.
    """
    _check_out_dir(out_dir)
    async with connect(config) as conn:
        info = await _task_info(conn, task_id)
    if info.result_root is None:
        raise WrongTaskState(task_id=task_id, state=info.state, command="fetch",
                             needed="a submitted result")
    members = [Member(m.address, m.endpoint) for m in info.members]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        timeout = aiohttp.ClientTimeout(total=config.http_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            got = await fetch_manifest(http, members, task_id, info.result_root)
            manifest = got.manifest
            _check_manifest_task(manifest.task_id, manifest.spec_hash, info)
            (staging / MANIFEST_FILE).write_bytes(got.raw)
            sources = {MANIFEST_FILE: got.source}
            files = {MANIFEST_FILE: info.result_root}
            wanted = [(WEIGHTS_FILE, manifest.weights_sha256),
                      (ARCH_FILE, manifest.arch_json_sha256)]
            while wanted:
                name, digest = wanted.pop(0)
                sources[name] = await download_artifact(http, members, task_id, digest,
                                                        staging / name)
                files[name] = digest
                if name == ARCH_FILE:
                    wanted += _program_of(staging / name)
        if out_dir.exists():
            out_dir.rmdir()
        staging.replace(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return FetchOutcome(task_id=task_id, out_dir=out_dir, result_root=info.result_root,
                        files=files, sources=sources,
                        metrics=manifest.metrics.model_dump(mode="json"))


def _program_of(arch_path: Path) -> list[tuple[str, str]]:
    """The torch-only program an (already hash-checked) arch.json pins, if any."""
    try:
        arch = json.loads(arch_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ClientError(f"arch.json is not JSON: {exc}") from exc
    digest = arch.get(PROGRAM_KEY) if isinstance(arch, dict) else None
    if isinstance(digest, str) and re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", digest):
        return [(PROGRAM_FILE, digest if digest.startswith("0x") else "0x" + digest)]
    return []


def _check_manifest_task(manifest_task: int, manifest_spec: str, info: TaskInfo) -> None:
    if manifest_task != info.task_id or manifest_spec.lower() != info.spec_hash.lower():
        raise ClientError(
            f"manifest is for task {manifest_task} / spec {manifest_spec}, "
            f"not task {info.task_id} / spec {info.spec_hash}")


async def verify_result(config: ClientConfig, task_id: int, result_dir: Path | None,
                        data: Path | None) -> VerifyReport:
    """Re-check a fetched result against the chain and compare its claims (see ``verify``)."""
    async with connect(config) as conn:
        info = await _task_info(conn, task_id)
    if info.result_root is None:
        raise WrongTaskState(task_id=task_id, state=info.state, command="verify",
                             needed="a submitted result")
    if result_dir is not None:
        return verify_folder(task_id, result_dir, info.result_root, data)
    with tempfile.TemporaryDirectory(prefix="manta-verify-") as tmp:
        await fetch_result(config, task_id, Path(tmp) / "result")
        return verify_folder(task_id, Path(tmp) / "result", info.result_root, data)
