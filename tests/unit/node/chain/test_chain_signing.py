"""EIP-712 result signatures: the pure digest matches eth-account's encoder; recovery works."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils.crypto import keccak

from node.chain.errors import InvalidAddress, InvalidHash
from node.chain.signing import (
    SignatureError,
    recover_result_signer,
    result_digest,
    sign_result,
)

MARKET = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ROOT = keccak(text="manifest")


def reference_digest(chain_id: int, task_id: int, root: bytes) -> bytes:
    message = encode_typed_data(full_message={
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Result": [
                {"name": "taskId", "type": "uint256"}, {"name": "resultRoot", "type": "bytes32"},
            ],
        },
        "primaryType": "Result",
        "domain": {"name": "MANTA TaskMarket", "version": "2", "chainId": chain_id,
                   "verifyingContract": MARKET},
        "message": {"taskId": task_id, "resultRoot": root},
    })
    return bytes(_hash_eip191_message(message))


@pytest.mark.parametrize("task_id", [0, 3, 2**64])
def test_digest_matches_eth_account_typed_data(task_id: int) -> None:
    assert result_digest(31337, MARKET, task_id, ROOT) == reference_digest(31337, task_id, ROOT)


def test_digest_binds_chain_contract_task_and_root() -> None:
    base = result_digest(31337, MARKET, 3, ROOT)
    others = [
        result_digest(1, MARKET, 3, ROOT),
        result_digest(31337, "0x" + "11" * 20, 3, ROOT),
        result_digest(31337, MARKET, 4, ROOT),
        result_digest(31337, MARKET, 3, keccak(text="other")),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_sign_and_recover_round_trip() -> None:
    member = Account.from_key(keccak(text="member-0"))
    signature = sign_result(member, 31337, MARKET, 3, ROOT)
    assert len(signature) == 65 and signature[-1] in (27, 28)
    assert recover_result_signer(signature, 31337, MARKET, 3, ROOT) == member.address
    assert recover_result_signer(signature, 31337, MARKET, 4, ROOT) != member.address


def test_bad_inputs_are_named_errors() -> None:
    with pytest.raises(SignatureError):
        recover_result_signer(b"\x00" * 64, 31337, MARKET, 3, ROOT)
    with pytest.raises(SignatureError):
        recover_result_signer(b"\x00" * 65, 31337, MARKET, 3, ROOT)
    with pytest.raises(InvalidHash):
        result_digest(31337, MARKET, 3, b"short")
    with pytest.raises(InvalidAddress):
        result_digest(31337, "0xnot-an-address", 3, ROOT)
