"""Revert decoding: every shape a revert takes reaches the same named ContractRevert."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from eth_tester.exceptions import TransactionFailed
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from node.chain.errors import ContractRevert, RpcUnavailable
from node.chain.models import TaskState
from node.chain.revert import (
    build_revert_table,
    decode_revert,
    decode_revert_data,
    revert_payload,
)

ABI: list[dict[str, Any]] = [
    {
        "type": "error", "name": "TaskMarketWrongState",
        "inputs": [
            {"name": "taskId", "type": "uint256", "internalType": "uint256"},
            {"name": "state", "type": "uint8", "internalType": "enum TaskMarket.State"},
        ],
    },
    {
        "type": "error", "name": "TaskMarketNotClient",
        "inputs": [
            {"name": "taskId", "type": "uint256", "internalType": "uint256"},
            {"name": "caller", "type": "address", "internalType": "address"},
        ],
    },
    {"type": "error", "name": "TaskMarketPaused", "inputs": []},
    {"type": "function", "name": "claim", "inputs": [], "outputs": []},
]
TABLE = build_revert_table(ABI, {"State": TaskState})


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def wrong_state(task_id: int, state: int) -> bytes:
    return selector("TaskMarketWrongState(uint256,uint8)") + encode(
        ["uint256", "uint8"], [task_id, state]
    )


def test_custom_error_decodes_by_name_with_enum_and_message() -> None:
    revert = decode_revert_data(wrong_state(3, 2), TABLE)
    assert revert.name == "TaskMarketWrongState"
    assert revert.arguments == {"taskId": 3, "state": TaskState.RUNNING}
    assert revert.selector == selector("TaskMarketWrongState(uint256,uint8)")
    assert str(revert) == "TaskMarketWrongState(taskId=3, state=RUNNING)"


def test_address_argument_is_checksummed() -> None:
    caller = "0x" + "ab" * 20
    data = selector("TaskMarketNotClient(uint256,address)") + encode(
        ["uint256", "address"], [7, caller]
    )
    revert = decode_revert_data(data, TABLE)
    assert revert.arguments["caller"] == "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB"


def test_error_string_panic_empty_and_unknown() -> None:
    text = decode_revert_data(bytes.fromhex("08c379a0") + encode(["string"], ["nope"]), TABLE)
    assert (text.name, text.arguments) == ("Error", {"message": "nope"})
    panic = decode_revert_data(bytes.fromhex("4e487b71") + encode(["uint256"], [0x12]), TABLE)
    assert panic.name == "Panic" and panic.arguments["code"] == 0x12
    assert "division" in panic.arguments["reason"]
    assert decode_revert_data(b"", TABLE).name == "Revert"
    unknown = decode_revert_data(b"\xde\xad\xbe\xef" + b"\x00" * 32, TABLE)
    assert unknown.name == "UnknownError" and unknown.selector == b"\xde\xad\xbe\xef"
    no_args = decode_revert_data(selector("TaskMarketPaused()"), TABLE)
    assert str(no_args) == "TaskMarketPaused()"


def test_truncated_arguments_are_unknown_not_a_crash() -> None:
    assert decode_revert_data(wrong_state(3, 2)[:20], TABLE).name == "UnknownError"


def test_out_of_range_enum_value_stays_an_int() -> None:
    assert decode_revert_data(wrong_state(1, 200), TABLE).arguments["state"] == 200


def test_every_backend_shape_decodes_identically() -> None:
    data = wrong_state(5, 1)
    shapes: list[object] = [
        data,
        "0x" + data.hex(),
        ContractCustomError("0x" + data.hex(), data="0x" + data.hex()),
        Web3RPCError(
            "execution reverted",
            rpc_response={"jsonrpc": "2.0", "id": 1,
                          "error": {"code": 3, "message": "execution reverted",
                                    "data": "0x" + data.hex()}},
        ),
        TransactionFailed(data),  # raised by eth-tester itself
        TransactionFailed(f"execution reverted: {data!r}"),  # re-raised by web3's provider
    ]
    decoded = [decode_revert(shape, TABLE) for shape in shapes]
    assert all(isinstance(d, ContractRevert) for d in decoded)
    assert {str(d) for d in decoded} == {"TaskMarketWrongState(taskId=5, state=OPEN)"}


def test_tester_text_reason_becomes_error_string() -> None:
    revert = decode_revert(TransactionFailed("execution reverted: not allowed"), TABLE)
    assert revert is not None and revert.arguments == {"message": "not allowed"}
    logic = decode_revert(ContractLogicError("execution reverted: x", data=None), TABLE)
    assert logic is not None and logic.arguments == {"message": "x"}


@pytest.mark.parametrize(
    "not_a_revert",
    [TimeoutError("slow"), ConnectionRefusedError(), RpcUnavailable("eth_call", ["u"], ["e"]),
     ValueError("bad"), 42, None],
)
def test_non_reverts_give_none(not_a_revert: object) -> None:
    assert revert_payload(not_a_revert) is None
    assert decode_revert(not_a_revert, TABLE) is None


@given(task_id=st.integers(0, 2**256 - 1), state=st.sampled_from(list(TaskState)))
def test_round_trip_any_task_and_state(task_id: int, state: TaskState) -> None:
    revert = decode_revert_data(wrong_state(task_id, int(state)), TABLE)
    assert revert.arguments == {"taskId": task_id, "state": state}
    assert str(revert) == f"TaskMarketWrongState(taskId={task_id}, state={state.name})"


def test_contract_revert_pickles_with_its_fields() -> None:
    import pickle

    revert = decode_revert_data(wrong_state(9, 3), TABLE)
    clone = pickle.loads(pickle.dumps(revert))
    assert (clone.name, clone.arguments, str(clone)) == (revert.name, revert.arguments, str(revert))
