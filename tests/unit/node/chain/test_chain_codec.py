"""ContractCodec: calldata, outputs, constructor and logs, without a chain."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.crypto import keccak

from node.chain.codec import AbiError, ContractCodec
from node.chain.models import LogEntry

ADDR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ABI: list[dict[str, Any]] = [
    {"type": "constructor", "inputs": [{"name": "owner", "type": "address"}]},
    {"type": "function", "name": "claim", "inputs": [{"name": "taskId", "type": "uint256"}],
     "outputs": []},
    {"type": "function", "name": "get", "inputs": [],
     "outputs": [{"name": "", "type": "tuple", "components": [
         {"name": "who", "type": "address"}, {"name": "amounts", "type": "uint96[]"}]}]},
    {"type": "event", "name": "Claimed", "anonymous": False, "inputs": [
        {"name": "taskId", "type": "uint256", "indexed": True},
        {"name": "miner", "type": "address", "indexed": True},
        {"name": "note", "type": "string", "indexed": False},
        {"name": "shares", "type": "uint96[]", "indexed": False}]},
]
CODEC = ContractCodec("Test", ABI)


def test_encode_call_and_errors() -> None:
    assert CODEC.encode_call("claim", 5) == keccak(text="claim(uint256)")[:4] + encode(
        ["uint256"], [5]
    )
    with pytest.raises(AbiError):
        CODEC.encode_call("claim")
    with pytest.raises(AbiError):
        CODEC.encode_call("nothing")


def test_struct_output_decodes_to_named_dict() -> None:
    data = encode(["(address,uint96[])"], [(ADDR.lower(), [1, 2])])
    assert CODEC.decode_output("get", data) == ({"who": ADDR, "amounts": (1, 2)},)


def test_constructor_arguments_follow_the_bytecode() -> None:
    assert CODEC.encode_deploy(b"\x60\x00", ADDR) == b"\x60\x00" + encode(["address"], [ADDR])


def test_log_round_trip_and_topic_filter() -> None:
    topic = keccak(text="Claimed(uint256,address,string,uint96[])")
    log = LogEntry(
        address=ADDR,
        topics=(topic, encode(["uint256"], [9]), encode(["address"], [ADDR])),
        data=encode(["string", "uint96[]"], ["hi", [3, 4]]),
        block_number=1, block_hash=b"\x01" * 32, tx_hash=b"\x02" * 32, log_index=0,
    )
    assert CODEC.decode_log(log) == (
        "Claimed", {"taskId": 9, "miner": ADDR, "note": "hi", "shares": (3, 4)}
    )
    other = log.model_copy(update={"topics": (b"\x00" * 32,)})
    assert CODEC.decode_log(other) is None
    assert CODEC.topic_filter("Claimed") == ["0x" + topic.hex()]
    assert CODEC.topic_filter("Claimed", None, ADDR) == [
        "0x" + topic.hex(), None, "0x" + encode(["address"], [ADDR]).hex()
    ]
