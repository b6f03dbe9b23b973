"""Typed values of the chain layer (frozen pydantic v2 models), validated at construction.

Addresses are EIP-55 checksummed (:class:`InvalidAddress` on anything else, including a
mixed-case address with a wrong checksum) and hashes are exactly 32 bytes
(:class:`InvalidHash`), so a malformed value is refused before any RPC call is made.
Wei are ``int``; seconds and timestamps are ``int`` with ``_s`` / ``deadline`` in the name.

- :class:`TaskState`, :class:`TaskParams`, :class:`TaskView`, :class:`Reputation`: the
  contract's types;
- :class:`ChainEvent` and one subclass per contract event (``TaskPosted`` … ``Withdrawn``);
- :class:`LogEntry`, :class:`TxReceipt`: what the sender returns;
- :class:`Deployment`: where the contracts live, read from / written to a JSON file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar

from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from node.chain.errors import DeploymentError, InvalidAddress, InvalidHash

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
UINT96_MAX = 2**96 - 1
UINT32_MAX = 2**32 - 1


def checksum_address(value: object) -> str:
    """``value`` as an EIP-55 address; raises :class:`InvalidAddress` on anything else."""
    if isinstance(value, bytes | bytearray) and len(value) == 20:
        value = "0x" + bytes(value).hex()
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        raise InvalidAddress(value=value)
    body = value[2:]
    mixed_case = body != body.lower() and body != body.upper()
    if mixed_case and not is_checksum_address(value):
        raise InvalidAddress(value=value)  # a typo that EIP-55 exists to catch
    return str(to_checksum_address(value))


def hash32(value: object) -> bytes:
    """``value`` (bytes or 0x-hex) as 32 bytes; raises :class:`InvalidHash` otherwise."""
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
        raw = bytes.fromhex(value[2:])
    else:
        raise InvalidHash(value=value)
    if len(raw) != 32:
        raise InvalidHash(value=value)
    return raw


def _to_hex(value: bytes) -> str:
    return "0x" + value.hex()


Address = Annotated[str, BeforeValidator(checksum_address)]
Hash32 = Annotated[bytes, BeforeValidator(hash32), PlainSerializer(_to_hex, when_used="json")]
def _hex_data(value: object) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise ValueError(f"expected bytes or hex, got {type(value).__name__}")


HexData = Annotated[bytes, BeforeValidator(_hex_data), PlainSerializer(_to_hex, when_used="json")]
Uint96 = Annotated[int, Field(ge=0, le=UINT96_MAX)]
Uint32 = Annotated[int, Field(ge=0, le=UINT32_MAX)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskState(IntEnum):
    """The contract's ``State`` enum, same order (the ABI carries it as uint8)."""

    NONE = 0
    OPEN = 1
    RUNNING = 2
    SUBMITTED = 3
    DISPUTED = 4
    SETTLED = 5
    CANCELLED = 6
    EXPIRED = 7


#: The contract's bond floor: a bond is at least 1/MIN_BOND_DIVISOR of a slot's share.
MIN_BOND_DIVISOR = 100
#: The contract's window bounds, in seconds.
MAX_WINDOWS_S = {"claim_window_s": 30 * 86400, "work_window_s": 180 * 86400,
                 "review_window_s": 30 * 86400, "arbitration_window_s": 30 * 86400}


def min_bond_wei(reward_wei: int, slots: int) -> int:
    """The smallest bond the contract takes for a task (never zero)."""
    per = MIN_BOND_DIVISOR * max(1, slots)
    return max(1, -(-reward_wei // per))


class TaskParams(_Frozen):
    """What a client posts (the contract's ``TaskParams``); ``token`` zero = native coin.
    The contract's own refusals (a bond under the floor, a window beyond its bound) are
    checked here first, so they are named before anything is signed."""

    token: Address = ZERO_ADDRESS
    reward_wei: Annotated[int, Field(gt=0, le=UINT96_MAX)]
    bond_wei: Uint96 = 0
    slots: Annotated[int, Field(ge=1, le=32)] = 1
    claim_window_s: Uint32
    work_window_s: Uint32
    review_window_s: Uint32
    arbitration_window_s: Uint32
    arbiter: Address
    spec_hash: Hash32
    validation_hash: Hash32

    @model_validator(mode="after")
    def _market_bounds(self) -> TaskParams:
        floor = min_bond_wei(self.reward_wei, self.slots)
        if self.bond_wei < floor:
            raise ValueError(f"bond_wei {self.bond_wei} is below the market's floor {floor} "
                             f"(1/{MIN_BOND_DIVISOR} of a slot's share)")
        for name, bound in MAX_WINDOWS_S.items():
            if getattr(self, name) > bound:
                raise ValueError(f"{name} {getattr(self, name)} is beyond the market's bound "
                                 f"{bound}")
        return self

    @property
    def is_native(self) -> bool:
        return self.token == ZERO_ADDRESS

    def as_abi(self) -> tuple[Any, ...]:
        """The struct as the ABI tuple, in the Solidity field order."""
        return (
            self.token, self.reward_wei, self.bond_wei, self.slots, self.claim_window_s,
            self.work_window_s, self.review_window_s, self.arbitration_window_s, self.arbiter,
            self.spec_hash, self.validation_hash,
        )


def camel_to_snake(name: str) -> str:
    """``taskId`` → ``task_id``, ``specURI`` → ``spec_uri``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class _FromAbi(_Frozen):
    """A model built from ABI values by name (``renames`` for names that carry a unit)."""

    renames: ClassVar[Mapping[str, str]] = {
        "reward": "reward_wei", "bond": "bond_wei", "amount": "amount_wei",
        "shares": "shares_wei", "workWindow": "work_window_s", "burned": "burned_wei",
        "reviewWindow": "review_window_s", "arbitrationWindow": "arbitration_window_s",
    }

    @classmethod
    def from_abi(cls, values: Mapping[str, Any], **extra: Any) -> Any:
        """Build from ``{abi_name: value}``; unknown names are ignored (forward compatible)."""
        fields = {cls.renames.get(k, camel_to_snake(k)): v for k, v in values.items()}
        known = {k: v for k, v in fields.items() if k in cls.model_fields}
        return cls(**known, **extra)


class TaskView(_FromAbi):
    """The contract's ``getTask`` answer; ``state`` is the effective (time-aware) state."""

    client: Address
    token: Address
    reward_wei: int
    bond_wei: int
    arbiter: Address
    slots: int
    claimed: int
    state: TaskState
    claim_deadline: int
    work_deadline: int
    settle_deadline: int
    work_window_s: int
    review_window_s: int
    arbitration_window_s: int
    spec_hash: Hash32
    result_root: Hash32
    group: Hash32 = bytes(32)  # the members' hash chain (:func:`group_hash`)
    miners_paid: bool = False
    closed: bool = False  # settled with nothing left to claim late (all signed, or swept)
    signed_slots: int = 0  # bit i: slot i signed the result
    present_slots: int = 0  # bit i: slot i checked in

    @property
    def is_native(self) -> bool:
        return self.token == ZERO_ADDRESS

    def signed(self, slot: int) -> bool:
        return bool(self.signed_slots >> slot & 1)

    def present(self, slot: int) -> bool:
        return bool(self.present_slots >> slot & 1)

    def share_wei(self, slot: int) -> int:
        """Slot ``slot``'s share of the reward under the contract's split rule (equal shares
        over the claimed slots, the rounding remainder to slot 0)."""
        return split_reward(self.reward_wei, self.claimed)[slot]


def split_reward(reward_wei: int, members: int) -> list[int]:
    """The contract's split rule, fixed when the task is posted: equal shares over the
    group's slots, slot 0 taking the rounding remainder."""
    if members < 1:
        return []
    each = reward_wei // members
    shares = [each] * members
    shares[0] += reward_wei - each * members
    return shares


def quorum(members: int) -> int:
    """Signatures a result needs: a strict majority of the group."""
    return members // 2 + 1


def group_hash(members: list[str] | tuple[str, ...]) -> bytes:
    """The contract's hash chain of a group in slot order (``keccak(h ‖ member)`` per slot)."""
    h = bytes(32)
    for member in members:
        h = keccak(h + bytes.fromhex(checksum_address(member)[2:]))
    return h


class Reputation(_Frozen):
    """A miner's record, weighed from the chain's events by the indexer (the contract keeps
    none): tasks and value it was paid for, by distinct clients, and its failures. A task
    counts only when its reward reaches the weigher's minimum, so 1-wei tasks add nothing."""

    completed: int = 0
    failed: int = 0
    disputes_lost: int = 0
    earned_wei: int = 0
    distinct_clients: int = 0


class LogEntry(_Frozen):
    """One raw log as returned by ``eth_getLogs`` or in a receipt."""

    address: Address
    topics: tuple[Hash32, ...]
    data: HexData
    block_number: int
    block_hash: Hash32
    tx_hash: Hash32
    log_index: int

    @classmethod
    def from_rpc(cls, log: Mapping[str, Any]) -> LogEntry:
        """From web3's log dict (camelCase keys, HexBytes values)."""
        return cls(
            address=log["address"], topics=tuple(bytes(t) for t in log["topics"]),
            data=bytes(log["data"]), block_number=int(log["blockNumber"]),
            block_hash=bytes(log["blockHash"]), tx_hash=bytes(log["transactionHash"]),
            log_index=int(log["logIndex"]),
        )


class TxReceipt(_Frozen):
    """The outcome of one mined transaction."""

    tx_hash: Hash32
    block_number: int
    block_hash: Hash32
    gas_used: int
    effective_gas_price_wei: int
    status: bool
    contract_address: Address | None = None
    logs: tuple[LogEntry, ...] = ()

    @classmethod
    def from_rpc(cls, receipt: Mapping[str, Any]) -> TxReceipt:
        created = receipt.get("contractAddress")
        return cls(
            tx_hash=bytes(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            block_hash=bytes(receipt["blockHash"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price_wei=int(receipt.get("effectiveGasPrice") or 0),
            status=int(receipt["status"]) == 1,
            contract_address=created or None,
            logs=tuple(LogEntry.from_rpc(log) for log in receipt.get("logs", [])),
        )


# ---- events --------------------------------------------------------------------------------


class ChainEvent(_FromAbi):
    """Where an event happened; subclasses add the event's arguments."""

    block_number: int
    block_hash: Hash32
    tx_hash: Hash32
    log_index: int


class MinerRegistered(ChainEvent):
    miner: Address
    endpoint: str


class TaskPosted(ChainEvent):
    task_id: int
    client: Address
    token: Address
    reward_wei: int
    bond_wei: int
    slots: int
    claim_deadline: int
    work_window_s: int
    review_window_s: int
    arbitration_window_s: int
    arbiter: Address
    spec_hash: Hash32
    validation_hash: Hash32
    spec_uri: str


class TaskClaimed(ChainEvent):
    task_id: int
    miner: Address
    slot: int


class TaskStarted(ChainEvent):
    task_id: int
    work_deadline: int


class ResultSubmitted(ChainEvent):
    task_id: int
    submitter: Address
    result_root: Hash32
    signed_slots: int
    review_deadline: int
    result_uri: str


class ResultEndorsed(ChainEvent):
    task_id: int
    miner: Address
    slot: int


class TaskDisputed(ChainEvent):
    task_id: int
    reason_hash: Hash32
    arbitration_deadline: int


class DisputeResolved(ChainEvent):
    task_id: int
    arbiter: Address
    miners_won: bool


class TaskSettled(ChainEvent):
    task_id: int
    miners_paid: bool


class TaskCancelled(ChainEvent):
    task_id: int


class TaskExpired(ChainEvent):
    task_id: int
    burned_wei: int

    @property
    def bonds_slashed(self) -> bool:
        return self.burned_wei > 0


class MemberCheckedIn(ChainEvent):
    task_id: int
    miner: Address
    slot: int
    evidence: Hash32


class Burned(ChainEvent):
    task_id: int
    token: Address
    amount_wei: int


class PaymentDeferred(ChainEvent):
    account: Address
    token: Address
    amount_wei: int


class Withdrawn(ChainEvent):
    account: Address
    token: Address
    amount_wei: int


EVENT_MODELS: Mapping[str, type[ChainEvent]] = {
    cls.__name__: cls
    for cls in (
        MinerRegistered, TaskPosted, TaskClaimed, TaskStarted, ResultSubmitted, TaskDisputed,
        DisputeResolved, TaskSettled, TaskCancelled, TaskExpired, MemberCheckedIn, Withdrawn,
        ResultEndorsed, Burned, PaymentDeferred,
    )
}


# ---- deployment ----------------------------------------------------------------------------


class Deployment(_Frozen):
    """Where the contracts live on one chain; what ``manta-node devnet`` writes for the others."""

    chain_id: int
    task_market: Address
    token: Address | None = None
    start_block: int = 0
    rpc_url: str = ""

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Read a deployment file; :class:`DeploymentError` if it is missing or malformed."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DeploymentError(path=str(path), reason=str(exc)) from exc
        if not isinstance(raw, dict):
            raise DeploymentError(path=str(path), reason="not a JSON object")
        try:
            return cls.model_validate(raw)
        except ValueError as exc:
            raise DeploymentError(path=str(path), reason=str(exc)) from exc

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename) so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
