"""Taking a restarted member back into its group's exchange: join requests, state transfer.

A member whose daemon or runner crashed resumes from its last checkpoint, up to
``checkpoint_every_steps`` behind the group, and listens at a new URL. :class:`Membership`
carries the rejoin rule of :mod:`miner.distributed.exchange` over the transport:

1. the restarted member sends a ``join`` message (its new URL and its step) to every peer.
   A peer that is training points its channel at the new URL, files the request with its
   :class:`GradientExchange` and replies ``training``; one that is itself waiting to rejoin
   replies ``joining``; a sender outside the group (or caught lying) is refused. If no peer
   replies ``training`` (the whole group restarted) the member goes on from its own
   checkpoint with the full group, as before;
2. the round coordinator admits the member in its round ``r`` declarations; once round
   ``r``'s update is applied, **every** live member's runner sends a ``state`` message:
   round ``r + 1``, the live set, the members admitted with it, and the group-wide part of
   the trainer's state (:func:`group_payload`: weights, optimizer and step, serialised with
   ``torch.save``);
3. the member checks each state's shape (it is among the admitted, the sender is live and
   was not admitted with it), hashes its content (:func:`state_digest`: every tensor's
   dtype, shape and bytes, every value, in a fixed order) and takes a state only once a
   strict majority of the members that answered ``training`` sent the same round, live set,
   admitted set and digest (:class:`StateBallot`); with one such member, its state. Then it
   calls :meth:`GradientExchange.rejoin`, loads :func:`merge_payload` (the group's weights
   with its own RNG and its own shard's data position moved on by the steps it skipped) and
   trains round ``r + 1`` with everyone.

No message's word decides: a member that names itself coordinator, or sends weights of its
own, is outvoted by the others, who hold the same state bit for bit (they applied the same
verified updates). The runner must therefore offer the state from every live member, not
only the coordinator.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import pickle
import struct
from collections import Counter
from collections.abc import Mapping, Sequence
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
    """A member's hand-over: the joiner trains from ``round_id`` with ``alive``, of
    which ``admitted`` came in at this round; ``state`` is :func:`encode_state` of
    :func:`group_payload`."""

    round_id: int
    alive: tuple[str, ...]
    state: Payload
    admitted: tuple[str, ...] = ()

    @property
    def coordinator(self) -> str | None:
        """The round's coordinator: the first live peer of the round that admitted
        (``None``: nobody). It decided the admission; its state counts as one vote."""
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


StateKey = tuple[int, tuple[str, ...], tuple[str, ...], bytes]
"""What members vote on: round, live set, admitted set, and the state's digest."""


@dataclass
class StateBallot:
    """The states members sent a rejoining member, by sender, and the one a strict majority
    of the voters agree on (pure: the caller hashes)."""

    votes: dict[str, StateKey] = field(default_factory=dict)
    states: dict[StateKey, GroupState] = field(default_factory=dict)

    def cast(self, sender: str, key: StateKey, state: GroupState) -> None:
        """``sender`` holds ``state`` (whose vote key is ``key``); a later vote replaces an
        earlier one, and one copy of each distinct state is kept."""
        self.votes[sender] = key
        self.states.setdefault(key, state)

    def winner(self, voters: frozenset[str]) -> GroupState | None:
        """The state more than half of ``voters`` sent, if any."""
        needed = len(voters) // 2 + 1
        counts = Counter(key for sender, key in self.votes.items() if sender in voters)
        for key, count in counts.items():
            if count >= needed:
                return self.states[key]
        return None


def state_digest(payload: Mapping[str, Any]) -> bytes:
    """SHA-256 over the group's part of a state payload (:data:`GROUP_KEYS`), canonical:
    mappings in key order, tensors as dtype, shape and raw bytes, other values by ``repr``.
    Members that applied the same updates get the same digest."""
    h = hashlib.sha256()
    _feed(h, {key: payload[key] for key in GROUP_KEYS})
    return h.digest()


def _feed(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        h.update(b"{")
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode() + b";")


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
        raise JoinError(f"unreadable state: {exc}", peer="a member") from exc
    if not isinstance(payload, dict) or not set(GROUP_KEYS) <= set(payload):
        raise JoinError("the state lacks the group's fields", peer="a member")
    return payload


@dataclass
class Membership:
    """Join requests and state transfers of one exchange over its transport channel."""

    channel: TransportChannel
    exchange: GradientExchange
    url: str
    refused: int = 0
    _ballot: StateBallot | None = None
    _voters: frozenset[str] | None = None
    _decided: asyncio.Future[GroupState] | None = None
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
        ``timeout_s`` for the state a majority of the training peers sends; ``None`` when no
        peer is training or no majority came. On success the exchange is live again from
        the state's round."""
        me = self.exchange.me
        self._ballot, self._voters = StateBallot(), None
        self._decided = asyncio.get_running_loop().create_future()
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
            self._voters = frozenset(training)
            self._count()
            state = await asyncio.wait_for(asyncio.shield(self._decided), timeout_s)
        except TimeoutError:
            votes = {} if self._ballot is None else self._ballot.votes
            log.warning("rejoin timed out step=%d states=%d", step, len(votes))
            return None
        finally:
            self._ballot = self._voters = self._decided = None
            for task in asks.values():
                task.cancel()
            await asyncio.gather(*asks.values(), return_exceptions=True)
        self.exchange.rejoin(state.round_id, state.alive)
        return state

    async def offer_state(
        self, peers: Sequence[str], round_id: int, alive: Sequence[str], state: bytes
    ) -> None:
        """Start sending ``state`` (for ``round_id``, live set ``alive``) to each admitted
        peer of ``peers``; every live member does (the joiner takes what a majority sent).
        The sends run in the background, owned by this object."""
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
            if self._ballot is not None:
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
        ballot = self._ballot
        try:
            if ballot is None or self._decided is None or self._decided.done():
                raise JoinError("no join is waiting for a state", peer=msg.peer)
            state = self._checked(GroupState.decode(msg.payload, msg.peer), msg)
            digest = await asyncio.to_thread(_digest_of, state.state)
        except JoinError as exc:
            self.refused += 1
            log.warning("state refused peer=%s error=%s", msg.peer, exc)
            return REFUSED.encode()
        key = (state.round_id, tuple(sorted(state.alive)), tuple(sorted(state.admitted)), digest)
        ballot.cast(msg.peer, key, state)
        log.info(
            "state received peer=%s round=%d digest=%s", msg.peer, state.round_id, digest.hex()[:16]
        )
        self._count()
        return b""

    def _checked(self, state: GroupState, msg: IncomingMessage) -> GroupState:
        """The shape checks of a state from ``msg.peer`` (its content is voted on)."""
        alive = sorted(state.alive)
        if not set(alive) <= set(self.exchange.group):
            raise JoinError(f"live set {alive} is not in the group", peer=msg.peer)
        if self.exchange.me not in state.admitted or not set(state.admitted) <= set(alive):
            raise JoinError(f"admitted {list(state.admitted)} do not fit {alive}", peer=msg.peer)
        if msg.peer not in alive or msg.peer in state.admitted:
            raise JoinError(f"not a member that trained round {state.round_id}", peer=msg.peer)
        if state.round_id != msg.round_id:
            raise JoinError(f"round {state.round_id} != {msg.round_id}", peer=msg.peer)
        return state

    def _count(self) -> None:
        """Settle the join once a majority of the training members agree on one state."""
        ballot, voters, decided = self._ballot, self._voters, self._decided
        if ballot is None or voters is None or decided is None or decided.done():
            return
        winner = ballot.winner(voters)
        if winner is not None:
            decided.set_result(winner)


def _digest_of(state: Payload) -> bytes:
    """:func:`state_digest` of an encoded state (a thread: it unpickles and hashes)."""
    return state_digest(decode_state(state))
