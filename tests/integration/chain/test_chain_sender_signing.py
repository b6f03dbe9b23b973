"""Signing against the contract, deployment helpers and the sender on a real chain."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from node.chain.deploy import deploy_market
from node.chain.market import TaskMarket
from node.chain.models import Deployment, TaskState
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import SenderConfig, TxSender
from node.chain.signing import recover_result_signer, result_digest

pytestmark = pytest.mark.asyncio(loop_scope="session")

Chain = Any  # the conftest's Chain
ETHER = 10**18


@pytest.mark.parametrize(("task_id", "root"), [
    (7, keccak(text="manifest")), (0, b"\x01" * 32), (2**256 - 1, b"\xff" * 32),
])
async def test_pure_digest_equals_the_contract_view(chain: Chain, task_id: int,
                                                    root: bytes) -> None:
    market = chain.market()
    on_chain = await market.result_digest(task_id, root)
    assert on_chain == result_digest(chain.pool.chain_id, market.address, task_id, root)


async def test_signatures_recover_to_the_members(chain: Chain) -> None:
    miners = ["miner0", "miner1", "miner2"]
    task_id = await chain.post(slots=3)
    await chain.claim(task_id, miners)
    signatures = chain.signatures(task_id, miners)
    members = await chain.market().members_of(task_id)
    recovered = [
        recover_result_signer(signatures[member], chain.pool.chain_id,
                              chain.deployment.task_market, task_id, chain.ROOT_HASH)
        for member in members
    ]
    assert recovered == members == [chain.address(m) for m in miners]
    assert chain.market().sign_result(chain.accounts["miner1"], task_id, chain.ROOT_HASH) \
        == signatures[chain.address("miner1")]
    other_root = recover_result_signer(signatures[members[1]], chain.pool.chain_id,
                                       chain.deployment.task_market, task_id, b"\x02" * 32)
    assert other_root != members[1]  # a signature holds for one result root only
    # miner2 submits with miner1's signature: 2 of 3, a strict majority
    await chain.submit(task_id, ["miner2", "miner1"])
    view = await chain.market().get_task(task_id)
    assert view.state is TaskState.SUBMITTED
    assert (view.signed(0), view.signed(1), view.signed(2)) == (False, True, True)


async def test_deploy_market_and_deployment_file(chain: Chain, tmp_path: Path) -> None:
    deployment = await deploy_market(chain.senders["outsider"], with_token=False, rpc_url="x")
    assert deployment.token is None and deployment.chain_id == chain.pool.chain_id
    assert deployment.start_block == await chain.pool.block_number()
    path = tmp_path / "deployment.json"
    deployment.save(path)
    loaded = Deployment.load(path)
    market = await TaskMarket.create(chain.pool, loaded.task_market, chain.senders["client"],
                                     abis=chain.abis)
    assert await market.task_count() == 0
    assert loaded.task_market != chain.deployment.task_market


async def test_event_queries_respect_block_ranges_and_filters(chain: Chain) -> None:
    first = await chain.post()
    middle_block = await chain.pool.block_number() + 1
    second = await chain.post()
    market = chain.market()
    assert [e.task_id for e in await market.get_task_posted(middle_block)] == [second]
    assert [e.task_id for e in await market.get_task_posted(0, middle_block - 1, first)] == [first]
    assert await market.get_task_posted(task_id=10**6) == []
    registered = await market.get_miner_registered(miner=chain.address("miner2"))
    assert [r.endpoint for r in registered] == ["http://127.0.0.1:9102"]


async def test_stale_local_nonce_is_resynced(chain: Chain) -> None:
    account = chain.accounts["outsider"]
    stale = await TxSender.create(chain.pool, account, chain.senders["outsider"].config)
    other = await TxSender.create(chain.pool, account, chain.senders["outsider"].config)
    await other.send(chain.address("client"), b"", value_wei=1)  # the account moves on
    receipt = await stale.send(chain.address("client"), b"", value_wei=1)
    assert receipt.status
    assert await chain.pool.get_nonce(account.address) == 2  # nothing sent in the setup


async def test_stuck_transaction_is_replaced_with_higher_fees(chain: Chain) -> None:
    if chain.backend != "anvil":
        pytest.skip("needs a node whose mining can be paused (anvil evm_setAutomine)")
    config = SenderConfig(receipt_timeout_s=20, poll_interval_s=0.02, bump_after_s=0.25)
    sender = await TxSender.create(chain.pool, chain.accounts["outsider"], config)
    original = await sender.fees()
    await chain.pool.request("evm_setAutomine", [False])
    try:
        sending = asyncio.create_task(sender.send(chain.address("client"), b"", value_wei=1))
        await asyncio.sleep(1.0)  # bumps are due every 0.25 s: at least one happens
        await chain.pool.request("evm_mine", [])
        receipt = await asyncio.wait_for(sending, 10)
    finally:
        await chain.pool.request("evm_setAutomine", [True])
    mined = await chain.pool.w3.eth.get_transaction(receipt.tx_hash)
    assert mined["nonce"] == 0
    assert mined["maxFeePerGas"] * 1000 >= original.max_fee_wei * 1125
    assert mined["maxPriorityFeePerGas"] * 1000 >= original.priority_fee_wei * 1125
    block = await chain.pool.w3.eth.get_block(receipt.block_number)
    assert len(block["transactions"]) == 1  # only one version of the nonce was mined


async def test_pool_fails_over_from_a_dead_url_to_the_node(chain: Chain) -> None:
    if chain.backend != "anvil":
        pytest.skip("needs a node reachable by URL")
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = RpcConfig(urls=(dead, *chain.pool.labels), chain_id=chain.pool.chain_id,
                       attempts_per_endpoint=2, backoff_initial_s=0.01)
    pool = await RpcPool.create(config)
    try:
        assert pool.w3.provider.endpoint_uri == chain.pool.labels[0]
        market = TaskMarket(pool, chain.deployment.task_market, chain.abis)
        assert await market.task_count() == await chain.market().task_count()
    finally:
        await pool.close()
