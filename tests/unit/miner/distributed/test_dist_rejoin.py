"""Taking a dropped member back: admission through the coordinator's results, and the
pure parts of the state transfer (messages, payload merge)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from miner.distributed.channel import InMemoryHub, Mailbox
from miner.distributed.errors import JoinError
from miner.distributed.exchange import ExchangeConfig, GradientExchange, RoundResult
from miner.distributed.frames import Declaration, FrameHead, decode_frame, result_frame
from miner.distributed.rejoin import (
    GroupState,
    JoinRequest,
    decode_state,
    encode_state,
    group_payload,
    merge_payload,
)
from miner.distributed.robust import RobustConfig

PEERS = ["0xa", "0xb", "0xc"]
CONFIG = ExchangeConfig(round_timeout_s=1.0, robust=RobustConfig(clip="none"))


async def _round(exchanges: list[GradientExchange], round_id: int, seed: int) -> list[RoundResult]:
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=600).astype(np.float32) for _ in exchanges]
    results = await asyncio.gather(
        *(ex.allreduce(round_id, v) for ex, v in zip(exchanges, values, strict=True))
    )
    for r in results:
        np.testing.assert_allclose(r.mean, np.mean(values, axis=0), rtol=1e-5, atol=1e-6)
    return list(results)


async def _drop_c(hub: InMemoryHub, group: list[GradientExchange]) -> list[GradientExchange]:
    """Round 1 with everyone, round 2 with 0xc dead; returns the survivors."""
    await _round(group, 1, 0)
    hub.kill("0xc")
    survivors = group[:2]
    tasks = [asyncio.create_task(ex.allreduce(2, np.ones(600, np.float32))) for ex in survivors]
    for r in await asyncio.gather(*tasks):
        assert r.report.dropped == ("0xc",)
    assert all(ex.alive == ("0xa", "0xb") for ex in survivors)
    return survivors


def _restart_c(hub: InMemoryHub) -> GradientExchange:
    hub.dead.discard("0xc")
    hub.mailboxes["0xc"] = Mailbox()
    return GradientExchange(hub.channel("0xc"), PEERS, CONFIG)


async def test_dropped_peer_is_admitted_by_the_coordinator_and_rounds_agree() -> None:
    hub = InMemoryHub()
    group = [GradientExchange(ch, PEERS, CONFIG) for ch in hub.channels(PEERS)]
    survivors = await _drop_c(hub, group)
    c = _restart_c(hub)
    for ex in survivors:
        ex.request_join("0xc")
    admitting = await _round(survivors, 3, 3)
    for r in admitting:
        assert r.report.admitted == ("0xc",) and r.report.peers == ("0xa", "0xb")
    assert all(ex.alive == tuple(PEERS) for ex in survivors)
    c.rejoin(4, survivors[0].alive)
    everyone = [*survivors, c]
    results = await _round(everyone, 4, 4)
    assert all(np.array_equal(results[0].mean, r.mean) for r in results)
    for r in results:
        assert r.report.contributed == tuple(PEERS) and not r.report.admitted
    await _round(everyone, 5, 5)  # the request was used up: nobody is admitted twice
    assert all(not ex.reports[-1].admitted for ex in everyone)


async def test_join_during_a_round_is_admitted_by_the_next_one() -> None:
    hub = InMemoryHub()
    group = [GradientExchange(ch, PEERS, CONFIG) for ch in hub.channels(PEERS)]
    survivors = await _drop_c(hub, group)
    hub.delay_s["0xb"] = 0.05  # round 3 is still running when the request comes
    running = asyncio.create_task(_round(survivors, 3, 3))
    await asyncio.sleep(0.01)
    assert not running.done()
    for ex in survivors:
        ex.request_join("0xc")
    assert all(not r.report.admitted for r in await running)
    assert all(ex.alive == ("0xa", "0xb") for ex in survivors)
    hub.delay_s.clear()
    assert all(r.report.admitted == ("0xc",) for r in await _round(survivors, 4, 4))
    c = _restart_c(hub)
    c.rejoin(5, survivors[1].alive)
    await _round([*survivors, c], 5, 5)
    with pytest.raises(Exception, match="before this peer rejoined"):
        await c.allreduce(4, np.ones(600, np.float32))


async def test_only_the_coordinator_admits() -> None:
    hub = InMemoryHub()
    group = [GradientExchange(ch, PEERS, CONFIG) for ch in hub.channels(PEERS)]
    survivors = await _drop_c(hub, group)
    survivors[1].request_join("0xc")  # 0xb heard it, the coordinator 0xa did not
    assert all(not r.report.admitted for r in await _round(survivors, 3, 3))
    assert survivors[0].coordinator == "0xa"
    assert all(ex.alive == ("0xa", "0xb") for ex in survivors)


async def test_join_from_outside_the_group_is_refused() -> None:
    hub = InMemoryHub()
    a = GradientExchange(hub.channel("0xa"), PEERS, CONFIG)
    with pytest.raises(JoinError, match="0xz"):
        a.request_join("0xz")
    with pytest.raises(JoinError):
        a.request_join("0xa")
    with pytest.raises(JoinError):
        a.rejoin(3, ["0xb", "0xc"])  # a live set without itself
    with pytest.raises(JoinError):
        a.rejoin(3, ["0xa", "0xz"])
    assert a.alive == tuple(PEERS)


def test_declarations_carry_the_admitted_bitmap() -> None:
    decl = Declaration(
        (b"\x01" * 16, b"\x02" * 16), (False, False), (False, False, True), b"r" * 16
    )
    data = result_frame(FrameHead(0, 9, 0, 2, 2, 3), decl, b"12345678")
    frame = decode_frame(b"".join(data), "p")
    assert frame.declaration is not None
    assert frame.declaration.admitted == (False, False, True)
    assert bytes(frame.payload) == b"12345678"


def test_join_request_and_group_state_messages() -> None:
    req = JoinRequest("http://127.0.0.1:9000", 5)
    assert JoinRequest.decode(req.encode(), "p") == req
    for bad in (
        b"{",
        b'{"url": "file:///etc/passwd", "step": 1}',
        b'{"url": "http://x", "step": -1}',
        b"x" * 5000,
    ):
        with pytest.raises(JoinError):
            JoinRequest.decode(bad, "p")
    state = GroupState(7, ("0xa", "0xc"), b"blob")
    back = GroupState.decode(b"".join(bytes(p) for p in state.encode()), "p")
    assert (back.round_id, back.alive, bytes(back.state)) == (7, ("0xa", "0xc"), b"blob")
    with pytest.raises(JoinError):
        GroupState.decode(b"\xff\x00\x00\x00{", "p")


def test_merge_keeps_own_rng_and_moves_own_data_position() -> None:
    own = {
        "format": 1,
        "config_hash": "h",
        "global_step": 5,
        "model": {"w": torch.zeros(2)},
        "optimizer": {},
        "data_epoch": 1,
        "data_index": 2,
        "torch_rng": torch.ones(3),
    }
    sent = {
        **own,
        "global_step": 8,
        "model": {"w": torch.ones(2)},
        "optimizer": {"x": 1},
        "data_epoch": 9,
        "torch_rng": torch.zeros(3),
    }
    group = decode_state(encode_state(group_payload(sent, 9)))
    assert group["global_step"] == 9 and "torch_rng" not in group
    merged = merge_payload(own, group, batches_per_epoch=4)
    assert merged["global_step"] == 9 and torch.equal(merged["model"]["w"], torch.ones(2))
    assert merged["optimizer"] == {"x": 1} and torch.equal(merged["torch_rng"], torch.ones(3))
    assert (merged["data_epoch"], merged["data_index"]) == (2, 2)  # 1*4+2 + 4 skipped = 10
    with pytest.raises(JoinError):
        merge_payload({**own, "config_hash": "other"}, group, 4)
    with pytest.raises(JoinError):
        decode_state(b"not a torch file")
