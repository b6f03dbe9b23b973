"""The torchrun-style launcher: rendezvous variables, success, and failure propagation."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from miner.distributed.config import WorkerEnv
from miner.distributed.errors import LaunchError
from miner.distributed.launch import LaunchConfig, WorkerGroup, main, worker_environ
from node.ports import free_port


def test_worker_environ_for_second_node() -> None:
    config = LaunchConfig(nproc_per_node=2, nnodes=3, node_rank=1, master_addr="10.0.0.5")
    env = worker_environ(config, 1, 29500, {"PATH": "/bin"})
    parsed = WorkerEnv.from_environ(env)
    assert (parsed.rank, parsed.local_rank, parsed.world_size, parsed.local_world_size) == (
        3,
        1,
        6,
        2,
    )
    assert parsed.init_method == "tcp://10.0.0.5:29500" and parsed.threads == 1
    assert env["PATH"] == "/bin"


def test_workers_see_their_ranks(tmp_path: Path) -> None:
    code = (
        "import os, json, sys; "
        "keys = ['RANK','LOCAL_RANK','WORLD_SIZE','MASTER_ADDR','MASTER_PORT','OMP_NUM_THREADS']; "
        "out = open(sys.argv[1] + '/' + os.environ['RANK'], 'w'); "
        "out.write(json.dumps({k: os.environ[k] for k in keys}))"
    )
    WorkerGroup.start(
        [sys.executable, "-c", code, str(tmp_path)], LaunchConfig(nproc_per_node=3)
    ).wait(30)
    seen = [json.loads((tmp_path / str(r)).read_text()) for r in range(3)]
    assert [s["LOCAL_RANK"] for s in seen] == ["0", "1", "2"]
    assert {s["MASTER_PORT"] for s in seen} == {seen[0]["MASTER_PORT"]}
    assert all(s["WORLD_SIZE"] == "3" and s["OMP_NUM_THREADS"] == "1" for s in seen)


def test_one_failure_stops_everyone() -> None:
    code = (
        "import os, sys, time; r = int(os.environ['RANK']); time.sleep(0.3); "
        "sys.exit(7) if r == 1 else time.sleep(60)"
    )
    group = WorkerGroup.start(
        [sys.executable, "-c", code], LaunchConfig(nproc_per_node=3, grace_s=2)
    )
    start = time.monotonic()
    with pytest.raises(LaunchError) as info:
        group.wait(30)
    assert info.value.rank == 1 and info.value.code == 7
    assert time.monotonic() - start < 10
    assert all(p.poll() is not None for p in group.processes)


def test_cli_returns_the_failure_code(tmp_path: Path) -> None:
    script = tmp_path / "w.py"
    script.write_text("import sys\nsys.exit(3)\n")
    assert main(["--nproc-per-node", "2", str(script)]) == 3


def test_two_nodes_of_one_miner_form_one_gloo_group(tmp_path: Path) -> None:
    code = (
        "import os, sys, torch\n"
        "from miner.distributed.config import WorkerEnv\n"
        "from miner.distributed.rig import RigGroup, leave_and_exit\n"
        "env = WorkerEnv.from_environ(os.environ)\n"
        "rig = RigGroup.join(env, torch.device('cpu'), timeout_s=120)\n"
        "t = torch.tensor([float(env.rank + 1)])\n"
        "rig.mean_(t)\n"
        "out = open(os.path.join(sys.argv[1], str(env.rank)), 'w')\n"
        "out.write(f'{t.item()} {env.world_size} {env.local_rank} {torch.get_num_threads()}')\n"
        "out.close()\n"
        "leave_and_exit(rig)\n"
    )
    port = free_port()
    groups = [
        WorkerGroup.start(
            [sys.executable, "-c", code, str(tmp_path)],
            LaunchConfig(nproc_per_node=1, nnodes=2, node_rank=node, master_port=port),
        )
        for node in (0, 1)
    ]
    try:
        for group in groups:
            group.wait(180)
    finally:
        for group in groups:
            group.stop()
    for rank in (0, 1):
        assert (tmp_path / str(rank)).read_text() == "1.5 2 0 1"
