"""The handshake's pure parts: layout, signatures, checks and key derivation."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account

from node.transport.config import TransportConfig
from node.transport.errors import (
    AuthError,
    NotAMember,
    ReplayError,
    StaleTimestamp,
    TransportBusy,
    UnknownSession,
    WrongRecipient,
)
from node.transport.handshake import (
    Mode,
    address_bytes,
    decode_hello,
    decode_welcome,
    encode_hello,
    encode_welcome,
    sign_digest,
    verify_hello,
)
from node.transport.replay import ReplayStore
from node.transport.sessions import Initiator, Responder, SessionTable

NOW_S = 1_800_000_000.0
ALICE, BOB, EVE = Account.create(), Account.create(), Account.create()
CONFIG = TransportConfig()


def responder(members: set[str] | None = None, now_s: float = NOW_S) -> Responder:
    group = {ALICE.address, BOB.address} if members is None else members

    async def membership(task_id: int, address: str) -> bool:
        return address in group

    return Responder(BOB, membership, CONFIG, lambda: now_s)


def hello_from(account=ALICE, to=BOB.address, now_s=NOW_S, mode=Mode.AEAD) -> Initiator:
    return Initiator.start(account, to, 7, "gradients", mode, now_s)


@pytest.mark.parametrize("mode", [Mode.AEAD, Mode.AUTH])
async def test_both_sides_derive_the_same_keys(mode: Mode) -> None:
    initiator = hello_from(mode=mode)
    welcome, theirs = await responder().accept(initiator.encoded)
    ours = initiator.finish(welcome, CONFIG, NOW_S)
    assert ours.session_id == theirs.session_id
    assert (ours.peer, theirs.peer) == (BOB.address, ALICE.address)
    assert ours.mode == theirs.mode == mode
    frame = ours.sealer.seal(2, 5, b"hello bob")
    out = bytearray(9)
    theirs.opener.open_into(
        theirs.opener.parse_header(bytes(frame[:24])), bytes(frame[24:]), memoryview(out)
    )
    assert out == b"hello bob"


def test_hello_round_trips_and_binds_every_field() -> None:
    initiator = hello_from()
    hello, signature = decode_hello(initiator.encoded)
    assert hello == initiator.hello
    assert encode_hello(hello, signature) == initiator.encoded
    for change in (
        {"task_id": 8},
        {"scope": "other"},
        {"mode": Mode.AUTH},
        {"timestamp_ms": hello.timestamp_ms + 1},
    ):
        forged = dataclasses.replace(hello, **change)
        with pytest.raises(AuthError, match="signature"):
            verify_hello(forged, signature, me=address_bytes(BOB.address), now_s=NOW_S, window_s=60)


def test_hello_signed_by_someone_else_is_refused() -> None:
    hello = hello_from().hello
    with pytest.raises(AuthError):
        verify_hello(
            hello,
            sign_digest(EVE, hello.digest()),
            me=address_bytes(BOB.address),
            now_s=NOW_S,
            window_s=60,
        )


@pytest.mark.parametrize("data", [b"", b"\x01" * 50, b"\x02" + b"\x00" * 300])
def test_malformed_hello_is_an_auth_error(data: bytes) -> None:
    with pytest.raises(AuthError):
        decode_hello(data)


async def test_responder_checks_in_order_and_remembers_nothing_on_refusal() -> None:
    server = responder()
    with pytest.raises(WrongRecipient):
        await server.accept(hello_from(to=EVE.address).encoded)
    with pytest.raises(StaleTimestamp):
        await server.accept(hello_from(now_s=NOW_S - 61).encoded)
    with pytest.raises(NotAMember):
        await server.accept(hello_from(account=EVE).encoded)
    assert len(server.replay) == 0
    initiator = hello_from()
    await server.accept(initiator.encoded)
    with pytest.raises(ReplayError):
        await server.accept(initiator.encoded)
    assert len(server.replay) == 1


async def test_welcome_must_answer_our_hello_from_the_asked_peer() -> None:
    first, second = hello_from(), hello_from()
    welcome, _ = await responder().accept(first.encoded)
    with pytest.raises(AuthError, match="another hello"):
        second.finish(welcome, CONFIG, NOW_S)
    parsed, _ = decode_welcome(welcome)
    forged = encode_welcome(parsed, sign_digest(EVE, parsed.digest()))
    with pytest.raises(AuthError, match="signature"):
        first.finish(forged, CONFIG, NOW_S)
    with pytest.raises(StaleTimestamp):
        first.finish(welcome, CONFIG, NOW_S + 3600)


def test_replay_store_forgets_after_its_ttl_and_is_bounded() -> None:
    store = ReplayStore(ttl_s=10, capacity=2)
    store.add(b"a", 0.0)
    with pytest.raises(ReplayError):
        store.add(b"a", 9.0)
    store.add(b"b", 5.0)
    with pytest.raises(TransportBusy):
        store.add(b"c", 6.0)
    store.add(b"a", 10.5)  # a's lifetime ended
    assert len(store) == 2


async def test_session_table_is_bounded_and_forgets_expired_sessions() -> None:
    table = SessionTable(capacity=2)
    sessions = []
    for opened_s in (NOW_S, NOW_S, NOW_S + 100):
        initiator = hello_from(now_s=opened_s)
        _, session = await responder(now_s=opened_s).accept(initiator.encoded)
        sessions.append(session)
    assert table.add(sessions[0], NOW_S) == 0
    assert table.add(sessions[1], NOW_S + 10) == 0
    assert table.get(sessions[0].session_id, NOW_S + 20) is sessions[0]
    later_s = sessions[0].expires_s
    assert table.add(sessions[2], later_s) == 0  # a full table sweeps expired sessions first
    with pytest.raises(UnknownSession):
        table.get(sessions[0].session_id, later_s)
    assert table.get(sessions[2].session_id, later_s) is sessions[2]
    assert len(table.sessions) == 1
