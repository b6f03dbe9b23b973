"""From "group formed" to a published result: the daemon's side of a training job.

:class:`JobSupervisor` is the ``on_group_formed`` hook of :func:`miner.daemon.runtime.open_miner`.
The hook runs under the daemon's lock, so it only writes the job folder
(:class:`~miner.daemon.jobspec.JobFile`: spec, group, slot, the members' on-chain endpoints),
starts the training subprocess (``python -m miner.daemon.jobrunner DIR``, the miner's key
written to its stdin pipe, which stays open: the runner ends when the daemon dies) and
returns. Under ``manta-miner run`` one runner waits ready (``--standby``: started when the
daemon starts and after each job, torch already imported) and is handed the job folder
instead, which saves the interpreter's and torch's start-up between the claim and the first
training step. The task stays ``formed`` in the store while it trains (the progress stream says
``training``/``searching``). A watcher task per job tails the progress file into the hub
and waits for the runner; on the leader, a clean exit is followed by
:meth:`JobSupervisor.publish`: the exported weights, ``arch.json``, ``model.pt2`` and the
training log go into the artifact store, and the ResultManifest (metrics measured on the
leader's validation split, the Pareto front, equal shares) is handed to
``daemon.publish_result``: the existing result flow then collects signatures and submits.
A runner that fails is restarted (it resumes from its last checkpoint) up to
``max_restarts`` times, then the task is marked failed.

After a restart of the daemon, :meth:`JobSupervisor.resume` restarts the runner of every job
still training (or publishes a finished one), so no claim or submission is repeated: those
go through the store's intent records.

HTTP: :meth:`JobSupervisor.routes` adds ``GET /tasks/{task_id}/exchange`` →
``{"url": "http://host:port"}`` (the job's gradient-exchange server, ``404`` until it
listens); group members find each other's exchange through their on-chain endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from eth_account.signers.local import LocalAccount

import miner
from miner.daemon import crashpoints, jobspec
from miner.daemon.errors import DaemonError
from miner.daemon.jobspec import JobFile
from miner.daemon.progress import ProgressTailer
from miner.daemon.result import equal_shares
from miner.daemon.runtime import MinerServices, open_miner
from miner.daemon.settings import MinerPaths, MinerSettings
from miner.daemon.specs import fetch_spec
from miner.daemon.store import TaskPhase, TaskRecord
from node.documents.manifest import Metrics, ParetoPoint, ResultManifest
from node.errors import MantaError

logger = logging.getLogger(__name__)

TRAINING = (TaskPhase.FORMED, TaskPhase.TRAINING, TaskPhase.SEARCHING)
MANIFEST_METRICS = ("accuracy", "epe")  # the metrics a manifest reports


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(job: JobFile, job_dir: Path, spec_hash: str, reward_wei: int,
                   log_sha256: str) -> ResultManifest:
    """The leader's manifest from a finished job folder (pure apart from reading it).

    The search summary names its metric (``accuracy``, or ``epe`` for stereo); the Pareto
    points carry the search's score, higher is better (accuracy, or −EPE).
    """
    export = job_dir / jobspec.EXPORT_DIR
    summary = json.loads((export / "search.json").read_text(encoding="utf-8"))
    chosen = summary["chosen"]
    front = tuple(
        ParetoPoint(arch=c["arch"], score=float(c["accuracy"]), flops=int(c["costs"]["flops"]),
                    params=int(c["costs"]["params"]) if "params" in c["costs"] else None)
        for c in summary["search"]["front"])
    metric = _metric(summary)
    return ResultManifest(
        task_id=job.task_id, spec_hash=spec_hash, arch=chosen["arch"],
        weights_sha256="0x" + _sha256_file(export / "model.safetensors"),
        arch_json_sha256="0x" + _sha256_file(export / "arch.json"),
        metrics=Metrics(**{metric: float(summary[f"val_{metric}"])},
                        flops=int(chosen["costs"]["flops"]),
                        params=int(chosen["costs"].get("params", 0))),
        pareto_front=front, training_log_sha256="0x" + log_sha256, group=job.group,
        shares_wei=equal_shares(reward_wei, len(job.group)), largest=_largest(summary))


def _metric(summary: dict[str, Any]) -> str:
    """The search summary's metric: ``accuracy`` (also when unnamed, as older runners wrote
    it) or ``epe``."""
    metric = str(summary.get("metric", "accuracy"))
    if metric not in MANIFEST_METRICS:
        raise DaemonError(f"search summary metric {metric!r} is not one a manifest reports")
    return metric


def _largest(summary: dict[str, Any]) -> ParetoPoint | None:
    """The search summary's largest sub-network (None from a runner that did not write it),
    with the score the search gave it (higher is better, like the front's)."""
    largest = summary.get("largest")
    if largest is None:
        return None
    costs = largest["costs"]
    return ParetoPoint(arch=largest["arch"], score=float(largest["score"]),
                       flops=int(costs["flops"]),
                       params=int(costs["params"]) if "params" in costs else None)


class JobSupervisor:
    """Starts, watches, restarts and finishes the training subprocesses of one miner."""

    def __init__(self, paths: MinerPaths, account: LocalAccount, *,
                 python: str = sys.executable, checkpoint_every_steps: int = 5,
                 exchange_host: str = "127.0.0.1", max_restarts: int = 2,
                 standby: bool = True) -> None:
        self._paths = paths
        self._key = account.key.hex()
        self._python = python
        self._checkpoint_every = checkpoint_every_steps
        self._exchange_host = exchange_host
        self._max_restarts = max_restarts
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: dict[int, asyncio.Task[None]] = {}
        self._standby: asyncio.subprocess.Process | None = None
        self._standby_wanted = standby
        self.published: dict[int, str] = {}

    # ---- HTTP ----------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/tasks/{task_id}/exchange", self._exchange)]

    async def _exchange(self, request: web.Request) -> web.Response:
        raw = request.match_info["task_id"]
        if not raw.isdigit():
            raise web.HTTPBadRequest(text=f"bad task id {raw!r}")
        path = self._paths.task_dir(int(raw)) / jobspec.EXCHANGE_FILE
        try:
            data = json.loads(await asyncio.to_thread(path.read_text, encoding="utf-8"))
        except (OSError, ValueError):
            raise web.HTTPNotFound(text=f"no gradient exchange for task {raw}") from None
        return web.json_response({"url": data["url"]})

    # ---- the hook ------------------------------------------------------------------------

    async def on_group_formed(self, services: MinerServices, record: TaskRecord) -> None:
        """Write the job folder and start its runner; returns at once (see module doc)."""
        try:
            await self._start(services, record)
        except MantaError as exc:
            logger.error("job not started task=%d error=%s", record.task_id, exc)
            await asyncio.to_thread(services.store.set_phase, record.task_id, TaskPhase.FAILED,
                                    f"job not started: {exc}")

    async def _job_file(self, services: MinerServices, record: TaskRecord) -> JobFile:
        job_dir = self._paths.task_dir(record.task_id)
        path = job_dir / jobspec.JOB_FILE
        if path.exists():
            return JobFile.model_validate_json(path.read_text(encoding="utf-8"))
        market = services.conn.market
        posted = await market.get_task_posted(task_id=record.task_id)
        if not posted:
            raise MantaError(f"task {record.task_id}: no TaskPosted event found")
        spec = await fetch_spec(posted[0])
        dataset_path = None
        if spec.dataset.sha256 is not None:
            dataset_path = str(self._paths.datasets_dir
                               / spec.dataset.sha256.lower().removeprefix("0x"))
        endpoints = {m: await market.endpoint_of(m) for m in record.group}
        job = JobFile(task_id=record.task_id, spec=spec, group=record.group,
                      slot=record.slot or 0, endpoints=endpoints, dataset_path=dataset_path,
                      exchange_host=self._exchange_host,
                      checkpoint_every_steps=self._checkpoint_every)
        jobspec.train_config(spec, dataset_path)  # refuse a spec we cannot train, now
        jobspec.search_limits(spec)
        job_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".job.json.tmp")
        tmp.write_text(job.model_dump_json(), encoding="utf-8")
        tmp.replace(path)
        return job

    async def _start(self, services: MinerServices, record: TaskRecord,
                     restarts: int = 0) -> None:
        job = await self._job_file(services, record)
        job_dir = self._paths.task_dir(record.task_id)
        proc = await self._take_standby(job_dir)
        if proc is None:
            proc = await self._spawn([str(job_dir)], job_dir / jobspec.LOG_FILE)
        crashpoints.crash_point("job.spawned")
        self._procs[job.task_id] = proc
        logger.info("training started task=%d slot=%d members=%d pid=%d", job.task_id,
                    job.slot, len(job.group), proc.pid)
        self._watchers[job.task_id] = asyncio.create_task(
            self._watch(services, job, proc, restarts), name=f"job-{job.task_id}")

    async def _spawn(self, args: list[str], log_path: Path) -> asyncio.subprocess.Process:
        """A runner with ``args`` (``[JOB_DIR]`` or ``["--standby", TASKS_DIR]``) and the key
        on its stdin."""
        root = str(Path(miner.__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        plan = crashpoints.armed()
        if plan is not None:  # the runner's crash points share the daemon's marker
            env.update(plan.child_environ())
        log = log_path.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python, "-m", "miner.daemon.jobrunner", *args,
                stdin=asyncio.subprocess.PIPE, stdout=log, stderr=log, env=env)
        finally:
            log.close()
        assert proc.stdin is not None
        proc.stdin.write(f"{self._key}\n".encode())
        await proc.stdin.drain()
        return proc

    async def start_standby(self) -> None:
        """Keep one runner started ahead of need (``jobrunner --standby``: torch and the
        engine already imported), so that a formed group trains a second or two sooner."""
        if not self._standby_wanted or (self._standby is not None
                                        and self._standby.returncode is None):
            return
        tasks = self._paths.task_dir(0).parent
        tasks.mkdir(parents=True, exist_ok=True)
        self._standby = await self._spawn(["--standby", str(tasks)],
                                          self._paths.data_dir / "standby.log")

    async def _take_standby(self, job_dir: Path) -> asyncio.subprocess.Process | None:
        """The standby runner, handed ``job_dir``; None if there is none alive."""
        proc, self._standby = self._standby, None
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return None
        try:
            proc.stdin.write(f"{job_dir}\n".encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return None
        return proc

    async def _watch(self, services: MinerServices, job: JobFile,
                     proc: asyncio.subprocess.Process, restarts: int) -> None:
        tailer = ProgressTailer(self._paths.task_dir(job.task_id) / "progress.jsonl",
                                job.task_id, services.hub)
        tail = asyncio.create_task(tailer.run())
        try:
            rc = await self._wait_or_stop(services, job.task_id, proc)
            await tailer.poll_once()
        finally:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
        self._procs.pop(job.task_id, None)
        logger.info("training ended task=%d rc=%d", job.task_id, rc)
        await self.start_standby()  # for the next task (not while this one trained: its CPU)
        record = await asyncio.to_thread(services.store.task, job.task_id)
        if record is None or record.phase not in TRAINING:
            return
        if rc == 0:
            if job.is_leader:
                try:
                    await self.publish(services, job)
                except MantaError as exc:
                    logger.error("result not published task=%d error=%s", job.task_id, exc)
            return
        if restarts < self._max_restarts:
            logger.warning("training failed; restarting task=%d rc=%d", job.task_id, rc)
            await self._start(services, record, restarts + 1)
        else:
            await asyncio.to_thread(services.store.set_phase, job.task_id, TaskPhase.FAILED,
                                    f"training failed {restarts + 1} times (rc={rc})")

    async def _wait_or_stop(self, services: MinerServices, task_id: int,
                            proc: asyncio.subprocess.Process, every_s: float = 1.0) -> int:
        """The runner's exit status. A task that failed while it trains (expired, cancelled
        or lost on chain) has nothing left to earn: its runner is stopped (stdin closed)."""
        exited = asyncio.ensure_future(proc.wait())
        try:
            while not (await asyncio.wait({exited}, timeout=every_s))[0]:
                record = await asyncio.to_thread(services.store.task, task_id)
                if record is not None and record.phase is TaskPhase.FAILED:
                    logger.warning("training stopped task=%d reason=%s", task_id,
                                   record.reason)
                    if proc.stdin is not None:
                        proc.stdin.close()
                    if not (await asyncio.wait({exited}, timeout=10.0))[0]:
                        proc.kill()
            return await exited
        finally:
            exited.cancel()

    async def publish(self, services: MinerServices, job: JobFile) -> str:
        """Store the artifacts and publish the manifest of a finished leader job."""
        job_dir = self._paths.task_dir(job.task_id)
        view = await services.conn.market.get_task(job.task_id)
        log_bytes = await asyncio.to_thread((job_dir / "progress.jsonl").read_bytes)
        log_sha = hashlib.sha256(log_bytes).hexdigest()
        manifest = await asyncio.to_thread(build_manifest, job, job_dir,
                                           "0x" + view.spec_hash.hex(), view.reward_wei, log_sha)
        artifacts = services.artifacts
        await asyncio.to_thread(artifacts.put_bytes, log_bytes, log_sha, job.task_id)
        export = job_dir / jobspec.EXPORT_DIR
        for name in ("model.safetensors", "arch.json", "model.pt2"):
            path = export / name
            if path.exists():
                digest = await asyncio.to_thread(_sha256_file, path)
                await asyncio.to_thread(artifacts.put_file, path, digest, job.task_id)
        crashpoints.crash_point("result.before_sign")
        root = await services.daemon.publish_result(job.task_id, manifest)
        self.published[job.task_id] = root
        metrics = manifest.metrics
        measured = (f"epe={metrics.epe:.4f}" if metrics.epe is not None
                    else f"accuracy={metrics.accuracy or 0.0:.4f}")
        logger.info("result published task=%d root=%s %s flops=%d", job.task_id, root,
                    measured, metrics.flops)
        return root

    # ---- restart and shutdown ---------------------------------------------------------------

    async def resume(self, services: MinerServices) -> None:
        """After a daemon restart: restart or finish every job that was training."""
        for record in await asyncio.to_thread(services.store.tasks, list(TRAINING)):
            if record.task_id in self._procs or not record.group:
                continue
            job_dir = self._paths.task_dir(record.task_id)
            finished = (job_dir / jobspec.RESULT_FILE).exists()
            try:
                if not finished:
                    await self._start(services, record)
                elif record.role == "leader":
                    job = await self._job_file(services, record)
                    await self.publish(services, job)
            except MantaError as exc:
                logger.error("job not resumed task=%d error=%s", record.task_id, exc)

    async def close(self) -> None:
        """Stop every runner (closing its stdin ends it) and every watcher."""
        for watcher in self._watchers.values():
            watcher.cancel()
        standby, self._standby = self._standby, None
        for proc in [*self._procs.values(), *([standby] if standby is not None else [])]:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for watcher in self._watchers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._procs.clear()
        self._watchers.clear()


async def run_job_miner(settings: MinerSettings, account: LocalAccount, stop: asyncio.Event,
                        poll_s: float = 5.0, **supervisor_options: Any) -> None:
    """``manta-miner run`` with real training: the daemon, its HTTP server (plus the exchange
    route) and a :class:`JobSupervisor`, until ``stop`` is set."""
    from miner.daemon.daemon import run_until_stopped

    supervisor = JobSupervisor(settings.paths(), account, **supervisor_options)
    async with open_miner(settings, account, supervisor.on_group_formed,
                          routes=supervisor.routes()) as services:
        try:
            await supervisor.resume(services)
            await supervisor.start_standby()
            await run_until_stopped(services.daemon, stop, poll_s)
        finally:
            await supervisor.close()
