"""Taking a restarted member back into its group's exchange: join requests, state transfer.

A member whose daemon or runner crashed resumes from its last checkpoint, up to
``checkpoint_every_steps`` behind the group, and listens at a new URL. :class:`Membership`
carries the rejoin rule of :mod:`miner.distributed.exchange` over the transport:

1. the restarted member sends a ``join`` message (its new URL and its step) to every peer.
   A peer that is training points its channel at the new URL, files the request with its
   :class:`GradientExchange` and replies ``training``; one that is itself waiting to rejoin
   replies ``joining``; a sender outside the group is refused. If no peer replies
   ``training`` (the whole group restarted) the member goes on from its own checkpoint with
   the full group, as before;
2. the round coordinator admits the member in its round ``r`` results; once round ``r``'s
   update is applied, its runner sends a ``state`` message: round ``r + 1``, the live set,
   the members admitted with it, and the group-wide part of the trainer's state
   (:func:`group_payload`: weights, optimizer and step, serialised with ``torch.save``);
3. the member checks it (it is among the admitted, and the sender is round ``r``'s
   coordinator, the first of the live set less the admitted: the first of the whole set
   may be the member itself), calls :meth:`GradientExchange.rejoin`, loads
   :func:`merge_payload` (the group's weights with its own RNG and its own shard's data
   position moved on by the steps it skipped) and trains round ``r + 1`` with everyone.

The members of a group already trust each other's gradients (robustly aggregated); a state
is taken only from the member that the state itself names as coordinator.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from miner.distributed.channel import Payload
from miner.distributed.errors import JoinError
from miner.distributed.exchange import GradientExchange
from miner.distributed.transport_channel import TransportChannel
from node.errors import MantaError
from node.transport import IncomingMessage

log = logging.getLogger(__name__)

JOIN_TYPE, STATE_TYPE = "join", "state"
TRAINING, JOINING, REFUSED = "training", "joining", "refused"
MAX_JOIN_BYTES = 4096
_LEN = struct.Struct("<I")
GROUP_KEYS = ("format", "config_hash", "global_step", "model", "optimizer")


@dataclass(frozen=True)
class JoinRequest:
    """What a restarted member tells each peer: where it listens now, and its step."""

    url: str
    step: int

    def encode(self) -> bytes:
        return json.dumps({"url": self.url, "step": self.step}, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: Payload, peer: str) -> JoinRequest:
        if len(data) > MAX_JOIN_BYTES:
            raise JoinError(f"{len(data)} bytes is too long", peer=peer)
        try:
            raw = json.loads(bytes(data))
            url, step = raw["url"], raw["step"]
        except (ValueError, KeyError, TypeError) as exc:
            raise JoinError(f"malformed request: {exc}", peer=peer) from exc
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise JoinError(f"bad url {url!r}", peer=peer)
        if not isinstance(step, int) or step < 0:
            raise JoinError(f"bad step {step!r}", peer=peer)
        return cls(url, step)


@dataclass(frozen=True)
class GroupState:
    """The coordinator's hand-over: the member trains from ``round_id`` with ``alive``, of
    which ``admitted`` came in at this round; ``state`` is :func:`encode_state` of
    :func:`group_payload`."""

    round_id: int
    alive: tuple[str, ...]
    state: Payload
    admitted: tuple[str, ...] = ()

    @property
    def coordinator(self) -> str | None:
        """Who sends it: the first live peer of the round that admitted (``None``: nobody)."""
        before = sorted(set(self.alive) - set(self.admitted))
        return before[0] if before else None

    def encode(self) -> list[bytes | Payload]:
        head = json.dumps(
            {"round": self.round_id, "alive": list(self.alive), "admitted": list(self.admitted)}
        ).encode()
        return [_LEN.pack(len(head)) + head, self.state]

    @classmethod
    def decode(cls, data: Payload, peer: str) -> GroupState:
        view = memoryview(data).cast("B")
        try:
            (n,) = _LEN.unpack_from(view)
            raw = json.loads(bytes(view[_LEN.size : _LEN.size + n]))
            round_id, alive = int(raw["round"]), tuple(str(a) for a in raw["alive"])
            admitted = tuple(str(a) for a in raw["admitted"])
        except (struct.error, ValueError, KeyError, TypeError) as exc:
            raise JoinError(f"malformed state: {exc}", peer=peer) from exc
        return cls(round_id, alive, view[_LEN.size + n :], admitted)


def group_payload(payload: dict[str, Any], round_id: int) -> dict[str, Any]:
    """What the group shares of a ``Trainer.state_payload()`` taken after round
    ``round_id - 1``'s update: weights, optimizer and (the next) step."""
    return {**{k: payload[k] for k in GROUP_KEYS}, "global_step": round_id}


def merge_payload(
    own: dict[str, Any], group: dict[str, Any], batches_per_epoch: int
) -> dict[str, Any]:
    """The payload a rejoining trainer loads: ``group``'s weights, optimizer and step over
    its ``own`` payload, whose data position moves on one batch per skipped step."""
    if group.get("config_hash") != own.get("config_hash"):
        raise JoinError("the group trains another config", peer="coordinator")
    skipped = int(group["global_step"]) - int(own["global_step"])
    per_epoch = max(1, batches_per_epoch)
    at = max(0, int(own["data_epoch"]) * per_epoch + int(own["data_index"]) + skipped)
    return {
        **own,
        **{k: group[k] for k in GROUP_KEYS},
        "data_epoch": at // per_epoch,
        "data_index": at % per_epoch,
    }


def encode_state(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def decode_state(data: Payload) -> dict[str, Any]:
    """The payload of a state message (tensors and plain values only: ``weights_only``)."""
    try:
        payload = torch.load(io.BytesIO(bytes(data)), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        raise JoinError(f"unreadable state: {exc}", peer="coordinator") from exc
    if not isinstance(payload, dict) or not set(GROUP_KEYS) <= set(payload):
        raise JoinError("the state lacks the group's fields", peer="coordinator")
    return payload


@dataclass
class Membership:
    """Join requests and state transfers of one exchange over its transport channel."""

    channel: TransportChannel
    exchange: GradientExchange
    url: str
    refused: int = 0
    _waiting: asyncio.Future[GroupState] | None = None
    _sends: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def attach(cls, channel: TransportChannel, exchange: GradientExchange, url: str) -> Membership:
        """Register the ``join`` and ``state`` handlers on the channel's server."""
        membership = cls(channel, exchange, url)
        channel.server.register(JOIN_TYPE, membership._on_join)
        channel.server.register(STATE_TYPE, membership._on_state)
        return membership

    async def rejoin(self, step: int, timeout_s: float) -> GroupState | None:
        """Ask every peer to take this member back (it resumed at ``step``) and wait up to
        ``timeout_s`` for the coordinator's state; ``None`` when no peer is training or none
        came. On success the exchange is live again from the state's round."""
        me = self.exchange.me
        self._waiting = asyncio.get_running_loop().create_future()
        request = JoinRequest(self.url, step).encode()
        asks = {
            p: asyncio.create_task(self._ask(p, request)) for p in self.exchange.group if p != me
        }
        try:
            await asyncio.wait(asks.values(), timeout=timeout_s)
            training = [p for p, t in asks.items() if t.done() and t.result() == TRAINING]
            log.info("join sent step=%d training=%s", step, training)
            if not training:
                return None
            state = await asyncio.wait_for(asyncio.shield(self._waiting), timeout_s)
        except TimeoutError:
            log.warning("rejoin timed out step=%d", step)
            return None
        finally:
            self._waiting = None
            for task in asks.values():
                task.cancel()
            await asyncio.gather(*asks.values(), return_exceptions=True)
        self.exchange.rejoin(state.round_id, state.alive)
        return state

    async def offer_state(
        self, peers: Sequence[str], round_id: int, alive: Sequence[str], state: bytes
    ) -> None:
        """Start sending ``state`` (for ``round_id``, live set ``alive``) to each admitted
        peer of ``peers``; the sends run in the background, owned by this object."""
        message = GroupState(round_id, tuple(alive), state, tuple(peers)).encode()
        for peer in peers:
            task = asyncio.create_task(self._send_state(peer, round_id, message))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def shutdown(self) -> None:
        self.channel.server.unregister(JOIN_TYPE)
        self.channel.server.unregister(STATE_TYPE)
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

    # --- handlers and sends -----------------------------------------------------------

    async def _ask(self, peer: str, request: bytes) -> str:
        try:
            reply = await self.channel.request(peer, JOIN_TYPE, [request])
            return bytes(reply).decode(errors="replace")
        except (OSError, MantaError) as exc:
            log.info("join not delivered peer=%s error=%s", peer, exc)
            return ""

    async def _send_state(self, peer: str, round_id: int, message: list[bytes | Payload]) -> None:
        try:
            await self.channel.request(peer, STATE_TYPE, message, round_id=round_id)
            log.info("state sent peer=%s round=%d", peer, round_id)
        except (OSError, MantaError) as exc:
            log.warning("state not delivered peer=%s round=%d error=%s", peer, round_id, exc)

    async def _on_join(self, msg: IncomingMessage) -> bytes:
        try:
            if msg.task_id != self.channel.task_id:
                raise JoinError(f"task {msg.task_id}", peer=msg.peer)
            request = JoinRequest.decode(msg.payload, msg.peer)
            if self._waiting is not None:
                return JOINING.encode()
            self.exchange.request_join(msg.peer)  # refuses a non-member before anything changes
            await self.channel.set_peer_url(msg.peer, request.url)
        except JoinError as exc:
            self.refused += 1
            log.warning("join refused peer=%s error=%s", msg.peer, exc)
            return REFUSED.encode()
        log.info("join filed peer=%s step=%d", msg.peer, request.step)
        return TRAINING.encode()

    async def _on_state(self, msg: IncomingMessage) -> bytes:
        waiting = self._waiting
        try:
            if waiting is None or waiting.done():
                raise JoinError("no join is waiting for a state", peer=msg.peer)
            state = GroupState.decode(msg.payload, msg.peer)
            alive = sorted(state.alive)
            if not set(alive) <= set(self.exchange.group):
                raise JoinError(f"live set {alive} is not in the group", peer=msg.peer)
            if self.exchange.me not in state.admitted or not set(state.admitted) <= set(alive):
                raise JoinError(
                    f"admitted {list(state.admitted)} do not fit {alive}", peer=msg.peer
                )
            if msg.peer != state.coordinator:
                raise JoinError(f"not the coordinator of {alive}", peer=msg.peer)
            if state.round_id != msg.round_id:
                raise JoinError(f"round {state.round_id} != {msg.round_id}", peer=msg.peer)
        except JoinError as exc:
            self.refused += 1
            log.warning("state refused peer=%s error=%s", msg.peer, exc)
            return REFUSED.encode()
        waiting.set_result(state)
        return b""
