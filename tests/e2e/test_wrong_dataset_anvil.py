"""A task whose spec pins a dataset hash the served data does not have: two real
``manta-miner run`` daemons download it, refuse the task with the reason in their logs and
send no claim; the client cancels with ``manta task cancel``, which pays the reward back
to the wei (its balance moves by its gas only)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from node.chain.models import TaskState
from node.demo.processes import start_data_server, until_served
from node.devnet import terminate_group
from node.documents.spec import DatasetRef
from tests.e2e.support import (
    ARBITER,
    CLIENT,
    log_of,
    needs_tools,
    open_market,
    phase_name,
    phase_of,
    tiny_spec,
    txs_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anvil, pytest.mark.timeout(180)]
REWARD, BOND = 10**17, 10**15


def _npz(labels: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, x=np.zeros((len(labels), 8, 8), dtype=np.uint8), y=labels)
    return out.getvalue()


async def test_wrong_dataset_hash_no_claim_then_cancel_refunds(tmp_path: Path) -> None:
    needs_tools()
    # the client pinned the hash of one pack and serves another (relabelled) one
    (tmp_path / "serve").mkdir()
    served = _npz(np.arange(40, dtype=np.int64) % 4)
    (tmp_path / "serve" / "train.npz").write_bytes(served)
    pinned = "0x" + hashlib.sha256(_npz(np.arange(40, dtype=np.int64) % 5)).hexdigest()
    actual = "0x" + hashlib.sha256(served).hexdigest()
    server, base = start_data_server(tmp_path / "serve", tmp_path / "serve.log")
    try:
        url = f"{base}/train.npz"
        await until_served(url, server, tmp_path / "serve.log")
        async with open_market(tmp_path) as env:
            client_before = await env.balance(CLIENT)
            miners = await env.start_miners()
            nonces = [await env.devnet.rpc.get_nonce(m.address, "latest") for m in miners]
            spec = tiny_spec(DatasetRef(url=url, sha256=pinned))
            (tmp_path / "spec.json").write_bytes(spec.canonical())
            posted = await env.client.run(
                ["task", "submit", str(tmp_path / "spec.json"), "--reward", f"{REWARD}wei",
                 "--bond", f"{BOND}wei", "--slots", "2", "--arbiter", env.address(ARBITER)])
            task_id = int(posted["task_id"])

            await env.until(lambda: all(phase_name(m, task_id) == "refused" for m in miners),
                            60, "refusals")
            reason = (f"spec_unusable: dataset hash mismatch: expected {pinned}, "
                      f"got {actual}")
            for miner, nonce in zip(miners, nonces, strict=True):
                assert phase_of(miner, task_id) == ("refused", reason)
                assert txs_of(miner, task_id) == []
                assert (f"claim decision task={task_id} claim=False reason={reason}"
                        in log_of(miner))
                # the wrong file was not kept where training would read it
                assert list((miner.data_dir / "datasets").glob("*")) == []
                assert await env.devnet.rpc.get_nonce(miner.address, "latest") == nonce
            assert await env.market.get_task_claimed(task_id=task_id) == []
            assert await env.market.state_of(task_id) is TaskState.OPEN

            cancelled = await env.client.run(["task", "cancel", str(task_id)])
            assert cancelled["state"] == "CANCELLED"
            assert await env.market.credit_of(env.address(CLIENT)) == 0  # refund pushed
            # post (-REWARD), cancel (+REWARD): the client is out its gas, to the wei
            assert await env.balance(CLIENT) == client_before - await env.gas_paid_wei(CLIENT)
            for miner in miners:  # the cancelled task changes nothing for the daemons
                assert phase_of(miner, task_id) == ("refused", reason)
                assert miner.process.poll() is None
    finally:
        terminate_group(server, 5.0)
