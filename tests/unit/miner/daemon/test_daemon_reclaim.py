"""After an expiry, a member that checked in withdraws its returned bond under the intent
``reclaim``; a crash around that withdrawal is reconciled without touching the task's
``failed`` phase (a ``withdraw`` intent would try to move a failed task to ``withdrawn``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from miner.daemon.settle import ResultFlow
from miner.daemon.store import Resolution, StateStore, TaskPhase, TxStatus

ME, PEER, TOKEN = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "00" * 20
TASK = 7


class FakeMarket:
    """The chain as ``reclaim_bond`` reads it: checked in, ``credit`` wei credited."""

    def __init__(self, credit: int) -> None:
        self.sender = SimpleNamespace(address=ME)
        self.credit, self.withdrawals = credit, 0

    async def is_checked_in(self, task_id: int, miner: str) -> bool:
        return task_id == TASK and miner == ME

    async def get_task(self, task_id: int) -> Any:
        return SimpleNamespace(token=TOKEN)

    async def credit_of(self, account: str, token: str) -> int:
        return self.credit

    async def withdraw(self, token: str) -> Any:
        self.withdrawals += 1
        self.credit = 0
        return SimpleNamespace(tx_hash=b"\x01" * 32, block_number=5)


def flow_of(store: StateStore, market: FakeMarket) -> ResultFlow:
    async def send_once(purpose: str, task_id: int,
                        send: Callable[[], Awaitable[Any]]) -> Any:
        record, fresh = store.begin_tx(purpose, task_id)
        if not fresh:
            return None
        receipt = await send()
        store.mark_mined(record.tx_id, "0x01", receipt.block_number)
        return receipt

    return ResultFlow(SimpleNamespace(), market, store, send_once)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    store = StateStore.open(tmp_path / "state.sqlite")
    store.record_task(TASK, "0x" + "11" * 32, TaskPhase.FORMED)
    store.set_group(TASK, [PEER, ME], ME)
    store.set_phase(TASK, TaskPhase.FAILED, "TaskExpired")
    return store


async def test_the_returned_bond_is_withdrawn_once_and_the_task_stays_failed(
        store: StateStore) -> None:
    market = FakeMarket(credit=3 * 10**15)
    flow = flow_of(store, market)
    await flow.reclaim_bond(TASK)
    await flow.reclaim_bond(TASK)  # the event delivered again after a restart
    assert market.withdrawals == 1
    assert [(t.purpose, t.status) for t in store.txs(TASK)] == [("reclaim", TxStatus.MINED)]
    record = store.task(TASK)
    assert record is not None and record.phase is TaskPhase.FAILED


async def test_a_reclaim_cut_short_before_sending_is_sent_again_by_the_poll(
        store: StateStore) -> None:
    market = FakeMarket(credit=3 * 10**15)
    lost, _ = store.begin_tx("reclaim", TASK)  # crashed after the intent, before sending
    flow = flow_of(store, market)
    assert await flow.recover(lost, own_tx_pending=False) is Resolution.RETRY
    assert market.withdrawals == 0  # recovery only abandons; the daemon's poll re-sends
    await flow.retry_reclaims()
    await flow.retry_reclaims()  # once: the new record is mined
    assert market.withdrawals == 1 and market.credit == 0
    assert [t.status for t in store.txs(TASK)] == [TxStatus.ABANDONED, TxStatus.MINED]


async def test_a_reclaim_mined_but_not_recorded_is_done_and_the_task_stays_failed(
        store: StateStore) -> None:
    market = FakeMarket(credit=0)  # the withdrawal went through before the crash
    sent, _ = store.begin_tx("reclaim", TASK)
    assert await flow_of(store, market).recover(sent, own_tx_pending=False) is Resolution.DONE
    assert market.withdrawals == 0
    record = store.task(TASK)
    assert record is not None and record.phase is TaskPhase.FAILED
