"""The transport's budgets on their own: sessions per peer, the connection cap's choice,
the file-descriptor plan, a session's one-message-at-a-time claim."""

from __future__ import annotations

import asyncio

import pytest
from eth_account import Account

from node.transport import MetricsRegistry, TransportConfig, TransportMetrics
from node.transport.errors import ReplayError
from node.transport.guard import ConnectionGuard, ConnectionState, choose_victim
from node.transport.handshake import Mode
from node.transport.limits import plan_fd_limit, raise_fd_limit
from node.transport.sessions import Initiator, Responder, Session, SessionTable

NOW_S = 1_700_000_000.0
SERVER = Account.create()
CONFIG = TransportConfig()


async def _member(task_id: int, address: str) -> bool:
    return True


async def _session(client: object, now_s: float = NOW_S) -> Session:
    hello = Initiator.start(client, SERVER.address, 1, "gradients", Mode.AEAD, now_s)  # type: ignore[arg-type]
    _, session = await Responder(SERVER, _member, CONFIG, lambda: now_s).accept(hello.encoded)
    return session


async def test_a_peer_opening_sessions_in_a_loop_only_evicts_its_own() -> None:
    table = SessionTable(capacity=100, per_peer=3)
    flooder, honest = Account.create(), Account.create()
    mine = await _session(honest)
    table.add(mine, NOW_S)
    flood = [await _session(flooder) for _ in range(20)]
    evicted = sum(table.add(s, NOW_S) for s in flood)
    assert evicted == 17 and table.count(flooder.address) == 3
    assert table.get(mine.session_id, NOW_S) is mine  # never anyone else's
    assert [s.session_id for s in flood[-3:]] == [
        sid for sid in table.sessions if table.sessions[sid].peer == flooder.address
    ]


async def test_a_full_table_evicts_from_the_peer_holding_the_most() -> None:
    table = SessionTable(capacity=4, per_peer=4)
    big, small = Account.create(), Account.create()
    for _ in range(3):
        table.add(await _session(big), NOW_S)
    keep = await _session(small)
    table.add(keep, NOW_S)
    assert table.add(await _session(small), NOW_S) == 1
    assert table.count(big.address) == 2 and table.count(small.address) == 2
    assert table.get(keep.session_id, NOW_S) is keep


def test_connection_cap_closes_idle_then_unauthenticated_never_a_members_message() -> None:
    conns = {
        "member-busy": ConnectionState(0, busy=1, trusted=True),
        "stranger-busy": ConnectionState(1, busy=1),
        "idle-new": ConnectionState(3),
        "idle-old": ConnectionState(2),
    }
    assert choose_victim(conns.items()) == "idle-old"
    del conns["idle-old"], conns["idle-new"]
    assert choose_victim(conns.items()) == "stranger-busy"
    del conns["stranger-busy"]
    assert choose_victim(conns.items()) is None


def test_guard_refuses_only_when_nothing_can_go() -> None:
    metrics = TransportMetrics.create(MetricsRegistry())
    guard = ConnectionGuard(2, metrics)

    class Conn:
        closed = False

        def force_close(self) -> None:
            self.closed = True

    a, b, c, d = Conn(), Conn(), Conn(), Conn()
    assert guard.admit(a) and guard.admit(b)
    assert guard.admit(c) and a.closed  # the oldest idle one made room
    for conn in (b, c):
        guard.conns[conn].busy, guard.conns[conn].trusted = 1, True
    assert not guard.admit(d)
    assert metrics.refused.value(reason="connection_cap") == 1
    assert metrics.connections.value(event="evicted") == 1


@pytest.mark.parametrize(
    ("soft", "hard", "want"),
    [
        (1024, 1_048_576, 65536),
        (1024, 4096, 4096),
        (100_000, 1_048_576, 100_000),
        (1024, -1, 65536),
    ],
)
def test_fd_limit_plan(soft: int, hard: int, want: int) -> None:
    assert plan_fd_limit(soft, hard) == want


def test_raise_fd_limit_never_lowers_it() -> None:
    limit = raise_fd_limit(target=1)
    assert limit.after == limit.before and not limit.raised


async def test_session_claim_refuses_a_replayed_head_at_once_and_preempts_a_stale_one() -> None:
    session = await _session(Account.create())
    entered = asyncio.Event()
    release = asyncio.Event()

    async def receive(seq: int) -> None:
        async with session.receive(seq):
            entered.set()
            await release.wait()

    first = asyncio.create_task(receive(5))
    await entered.wait()
    with pytest.raises(ReplayError):  # the same HEAD again, e.g. copied off the wire
        async with session.receive(5):
            pass
    assert session.preempts(9)
    entered.clear()
    second = asyncio.create_task(receive(9))  # the sender moved on: the old one is dead
    await entered.wait()
    assert first.cancelled() or (
        first.done() and isinstance(first.exception(), asyncio.CancelledError)
    )
    assert session.opener.last_seq == 9
    release.set()
    await second
    with pytest.raises(ReplayError):  # committed: older heads are replays
        async with session.receive(7):
            pass
