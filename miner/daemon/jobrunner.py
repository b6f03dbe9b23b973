"""The training subprocess of one task: ``python -m miner.daemon.jobrunner JOB_DIR``.

Started by :class:`miner.daemon.job.JobSupervisor` once the task's group is formed. It reads
``JOB_DIR/job.json`` (:class:`~miner.daemon.jobspec.JobFile`) and the miner's private key as
the first line of **stdin** (never argv, environment or disk), then:

1. trains the supernet into ``JOB_DIR/run`` (checkpoints there; a restarted runner resumes
   from the newest one). With other members, scheme 1 (data parallel): each member trains
   the same K sub-networks per step on its own shard of the training split, and one
   all-reduce per step averages the gradients over an authenticated transport server it
   starts on a free port of ``exchange_host``; its URL goes to ``JOB_DIR/exchange.json``,
   which the daemon serves at ``GET /tasks/{id}/exchange`` and where the peers find it
   (from each member's on-chain endpoint). A resumed runner first asks the group to take it
   back (``miner.distributed.rejoin``): if a peer is still training, the round coordinator
   admits it and hands over the group's weights, optimizer and step, and it trains on from
   there with everyone instead of alone from its older checkpoint;
2. on the leader only: measures sub-networks, fits the predictor, searches under the
   spec's limits, recalibrates BN and exports into ``JOB_DIR/export`` (``run_search``);
3. appends progress lines to ``JOB_DIR/progress.jsonl`` throughout, ``done`` at the end.
   Metrics are named by the task's metric: ``accuracy`` / ``val_accuracy`` for
   classification, ``epe`` / ``val_epe`` (pixels, lower is better) for stereo.

``python -m miner.daemon.jobrunner --standby TASKS_DIR`` is the same runner started ahead of
need: it reads the key, imports torch and the engine, then waits for its job folder (inside
``TASKS_DIR``) on the next line of stdin (the daemon keeps one ready, see
:class:`~miner.daemon.job.JobSupervisor`). Either way a runner that holds its job folder's
lock writes its pid to ``JOB_DIR/runner.pid``.

Exit status 0 when everything finished. The runner also ends itself when its stdin closes
(the daemon died: a restarted daemon starts a fresh runner, which waits on the job folder's
lock and resumes from the last checkpoint). One torch thread: a daemon never starves its host.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from miner.daemon import crashpoints, jobspec
from miner.daemon.jobspec import JobFile
from miner.daemon.progress import append_progress

logger = logging.getLogger(__name__)

EXIT_PARENT_GONE = 3
PEER_DISCOVERY_TIMEOUT_S = 120.0
REJOIN_ROUNDS, REJOIN_SLACK_S = 3, 30.0  # how long a resumed member waits to be taken back


def _watch_parent(stream: Any) -> None:
    """Exit as soon as stdin closes: the daemon that owns this runner is gone."""
    while stream.read(4096):
        pass
    os._exit(EXIT_PARENT_GONE)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def _peer_exchange_url(endpoint: str, task_id: int, deadline: float) -> str:
    """Ask a member's daemon where its gradient exchange listens (retried until it says)."""
    url = f"{endpoint.rstrip('/')}/tasks/{task_id}/exchange"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(json.loads(response.read())["url"])
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer exchange at {url} not available: {exc}") from exc
            time.sleep(0.2)


class _Exchange:
    """The group's gradient exchange for this runner (transport server + bridge)."""

    def __init__(self, job: JobFile, key: str, job_dir: Path) -> None:
        from eth_account import Account

        from miner.distributed.bridge import AsyncBridge, BridgedExchange
        from miner.distributed.exchange import ExchangeConfig, GradientExchange
        from miner.distributed.rejoin import Membership
        from miner.distributed.transport_channel import TransportChannel
        from node.transport import Mode, TransportServer

        account = Account.from_key(key)
        if account.address.lower() != job.address.lower():
            raise ValueError("the key on stdin is not this slot's member")
        members = {m.lower() for m in job.group}

        async def membership(task_id: int, address: str) -> bool:
            return task_id == job.task_id and address.lower() in members

        self.bridge = AsyncBridge()
        self.server = self.bridge.run(TransportServer.create(
            account, membership, host=job.exchange_host, port=0))
        _write_json(job_dir / jobspec.EXCHANGE_FILE, {"url": self.server.url})
        deadline = time.monotonic() + PEER_DISCOVERY_TIMEOUT_S
        urls = {peer: _peer_exchange_url(job.endpoints[peer], job.task_id, deadline)
                for peer in job.peers}
        logger.info("peers found task=%d peers=%s", job.task_id, urls)
        self.channel = TransportChannel.attach(self.server, account, urls, job.task_id,
                                               mode=Mode.AEAD)
        timeout_s = job.round_timeout_s or job.spec.distributed.round_timeout_s
        # The second reducer per piece (ExchangeConfig.verify) stays off in training for now: with
        # it on, a member that rejoins ends with other parameters than the group (see
        # tests/integration/daemon/test_daemon_rejoin_anvil.py); the bound on every part, the
        # finiteness checks and the locally derived contributor sets apply either way.
        exchange = GradientExchange(self.channel, list(job.group),
                                    ExchangeConfig(round_timeout_s=timeout_s, verify=False))
        self.cross = BridgedExchange(exchange, self.bridge)
        self.membership = Membership.attach(self.channel, exchange, self.server.url)
        self.rejoin_timeout_s = REJOIN_ROUNDS * timeout_s + REJOIN_SLACK_S

    def rejoin(self, trainer: Any) -> None:
        """Ask the group to take this resumed member back; when the coordinator's state comes,
        ``trainer`` continues from the group's weights, optimizer and step."""
        from miner.distributed.rejoin import decode_state, merge_payload

        step = trainer.global_step
        state = self.bridge.run(self.membership.rejoin(step, self.rejoin_timeout_s))
        if state is None:
            logger.info("no group to rejoin step=%d: resuming alone from the checkpoint", step)
            return
        group = decode_state(state.state)
        trainer.load_payload(merge_payload(trainer.state_payload(), group,
                                           trainer.batches.batches_per_epoch))
        logger.info("rejoined the group step=%d from_step=%d", trainer.global_step, step)

    def offer_state(self, trainer: Any, report: Any) -> None:
        """After round ``report`` (its update applied), every live member hands the members
        it admitted its state for the next round: the joiner takes only a state that a strict
        majority of them sent (:mod:`miner.distributed.rejoin`)."""
        from miner.distributed.rejoin import encode_state, group_payload

        if not report.admitted:
            return
        state = encode_state(group_payload(trainer.state_payload(), report.round_id + 1))
        self.bridge.run(self.membership.offer_state(report.admitted, report.round_id + 1,
                                                    self.cross.peers, state))

    def close(self) -> None:
        async def shutdown() -> None:
            await self.membership.shutdown()
            await self.channel.shutdown()
            await self.server.shutdown()

        self.bridge.close(shutdown)


def _train(job: JobFile, key: str, job_dir: Path, progress: Path) -> None:
    import torch

    from miner.automl.data import BatchIterator
    from miner.automl.runs import prepare_training, run_training
    from miner.automl.space import step_subnet_names
    from miner.automl.train.loop import StepReport
    from miner.distributed.averager import GradientAverager, supernet_masks
    from miner.distributed.trainer_hook import TrainerHook

    config = jobspec.train_config(job.spec, job.dataset_path, job.checkpoint_every_steps)
    run_dir = job_dir / jobspec.RUN_DIR
    resume = (run_dir / "train_config.json").exists() or (run_dir / "checkpoints").exists()
    prepared = prepare_training(config, run_dir, resume)
    trainer = prepared.trainer
    if trainer.done:
        return
    exchange = None
    if len(job.group) > 1:
        data = trainer.batches.data
        shard = data.subset(torch.tensor(jobspec.shard_indices(len(data), job.slot,
                                                               len(job.group))))
        trainer.batches = BatchIterator(shard, min(config.batch_size, len(shard)),
                                        config.seed + job.slot)
        if resume:
            trainer.resume()  # the data position is the shard's
        exchange = _Exchange(job, key, job_dir)
        if resume:
            exchange.rejoin(trainer)
        hook = TrainerHook(GradientAverager("data_parallel", supernet_masks(trainer.net),
                                            cross=exchange.cross), start_step=trainer.global_step)
        guarded: list[object] = []

        def gradient_hook(params: Sequence[Any], archs: Sequence[Any]) -> None:
            if trainer.optimizer is not None and not any(o is trainer.optimizer
                                                         for o in guarded):
                hook.attach(trainer.optimizer)
                guarded.append(trainer.optimizer)
            hook(params, archs)

        trainer.gradient_hook = gradient_hook

    traffic = {"rounds": 0, "bytes": 0}
    missed: dict[str, int] = {}  # rounds each peer was in but did not contribute to

    def on_progress(report: StepReport) -> None:
        update: dict[str, Any] = {
            "phase": "training", "epoch": report.epoch, "step": report.global_step,
            "total_steps": report.total_steps, "train_phase": report.phase,
            "subnets": [{"name": name, "loss": loss, report.metric: value}
                        for name, loss, value in zip(
                            step_subnet_names(len(report.losses), config.sandwich),
                            report.losses, report.accuracies, strict=True)],
            "samples_per_s": report.samples_per_s, "peers": list(job.group),
            "time_s": time.time()}
        if exchange is not None:
            reports = exchange.cross.exchange.reports
            for r in reports[traffic["rounds"]:]:
                traffic["bytes"] += r.bytes_sent
                for peer in r.peers:
                    missed[peer] = missed.get(peer, 0) + (peer not in r.contributed)
                if r.round_id == report.global_step - 1:  # this step's round: update applied
                    exchange.offer_state(trainer, r)
            traffic["rounds"] = len(reports)
            update["exchange_rounds"] = traffic["rounds"]
            update["grad_bytes_sent"] = traffic["bytes"]
            update["dropped_rounds"] = dict(missed)
            if reports:
                update["peers"] = list(reports[-1].contributed)
        append_progress(progress, update)
        crashpoints.crash_point("runner.training", os.getppid())  # chaos tests kill the daemon

    try:
        summary = run_training(prepared, on_progress)
    finally:
        if exchange is not None:
            exchange.close()
    append_progress(progress, {"phase": "training", "step": summary.global_step,
                               f"val_{summary.metric}": summary.val_accuracy,
                               "time_s": time.time()})


def _search(job: JobFile, job_dir: Path, progress: Path) -> None:
    from miner.automl.runs import SearchRequest, prepare_search, run_search

    out = job_dir / jobspec.EXPORT_DIR
    if not out.exists():
        append_progress(progress, {"phase": "searching", "time_s": time.time()})
        prepared = prepare_search(SearchRequest(
            run_dir=job_dir / jobspec.RUN_DIR, out_dir=out, limits=jobspec.search_limits(job.spec),
            objective="flops", n_subnets=job.search_subnets, population=job.search_population,
            generations=job.search_generations, seed=job.spec.seed))

        def on_subnet(done: int, total: int) -> None:
            append_progress(progress, {"phase": "searching", "subnets_measured": done,
                                       "subnets_total": total, "time_s": time.time()})
            crashpoints.crash_point("runner.searching", os.getppid())

        summary = run_search(prepared, on_subnet)
        append_progress(progress, {"phase": "exporting",
                                   f"val_{summary.metric}": summary.val_accuracy,
                                   "front_size": summary.front_size, "time_s": time.time()})


def run_job(job_dir: Path, key: str) -> None:
    """Train (and, on the leader, search and export) the job in ``job_dir``."""
    job = JobFile.model_validate_json((job_dir / jobspec.JOB_FILE).read_text(encoding="utf-8"))
    progress = job_dir / "progress.jsonl"
    (job_dir / jobspec.EXCHANGE_FILE).unlink(missing_ok=True)  # a stale URL from a dead run
    done = job_dir / jobspec.RESULT_FILE
    if not done.exists():
        _train(job, key, job_dir, progress)
        if job.is_leader:
            _search(job, job_dir, progress)
        _write_json(done, {"task_id": job.task_id, "leader": job.is_leader})
    append_progress(progress, {"phase": "done", "time_s": time.time()})


def _preload() -> None:
    """Import torch and the engine (most of a runner's start-up) and set the thread count."""
    import torch

    import miner.automl.runs
    import miner.distributed.averager
    import miner.distributed.trainer_hook  # noqa: F401

    torch.set_num_threads(int(os.environ.get("MANTA_TORCH_THREADS", "1")))


def _log_to(path: Path) -> None:
    """Point this process's stdout and stderr at ``path`` (appending)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    """``JOB_DIR``: run that job. ``--standby TASKS_DIR``: import everything first, then
    wait for the job folder (one inside ``TASKS_DIR``) as the second line of stdin (the
    daemon keeps one such runner ready, so a formed group's training starts without the
    interpreter's and torch's start-up); an end of stdin before it means the daemon is gone
    or needs no runner: exit quietly."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not ((len(args) == 1 and not args[0].startswith("-"))
            or (len(args) == 2 and args[0] == "--standby")):
        print("usage: python -m miner.daemon.jobrunner JOB_DIR | --standby TASKS_DIR"
              "  (key on stdin)", file=sys.stderr)
        return 2
    key = sys.stdin.readline().strip()
    if not key:
        print("no key on stdin", file=sys.stderr)
        return 2
    _preload()  # a standby runner does it before it waits: that is what it is for
    if args[0] == "--standby":
        line = sys.stdin.readline().strip()
        if not line:
            return EXIT_PARENT_GONE
        job_dir = Path(line)
        if job_dir.resolve().parent != Path(args[1]).resolve():
            print(f"job folder {job_dir} is not in {args[1]}", file=sys.stderr)
            return 2
        _log_to(job_dir / jobspec.LOG_FILE)
    else:
        job_dir = Path(args[0])
    crashpoints.arm(crashpoints.CrashPlan.from_environ(os.environ,
                                                    job_dir.resolve().parent.parent))
    threading.Thread(target=_watch_parent, args=(sys.stdin.buffer,), daemon=True).start()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with (job_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a runner of a killed daemon may still be exiting
        (job_dir / jobspec.PID_FILE).write_text(f"{os.getpid()}\n", encoding="utf-8")
        try:
            run_job(job_dir, key)
        except Exception as exc:
            logger.exception("job failed dir=%s", job_dir)
            append_progress(job_dir / "progress.jsonl",
                            {"phase": "failed", "error": str(exc)[:500], "time_s": time.time()})
            return 1
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: the stdin watcher thread would block interpreter shutdown
