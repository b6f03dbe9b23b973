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
SHARES = [600, 400]


def reference_digest(chain_id: int, task_id: int, shares: list[int]) -> bytes:
    message = encode_typed_data(full_message={
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Result": [
                {"name": "taskId", "type": "uint256"}, {"name": "resultRoot", "type": "bytes32"},
                {"name": "shares", "type": "uint96[]"},
            ],
        },
        "primaryType": "Result",
        "domain": {"name": "MANTA TaskMarket", "version": "1", "chainId": chain_id,
                   "verifyingContract": MARKET},
        "message": {"taskId": task_id, "resultRoot": ROOT, "shares": shares},
    })
    return bytes(_hash_eip191_message(message))


@pytest.mark.parametrize("shares", [[1000], [600, 400], [], [2**96 - 1, 0, 5]])
def test_digest_matches_eth_account_typed_data(shares: list[int]) -> None:
    assert result_digest(31337, MARKET, 3, ROOT, shares) == reference_digest(31337, 3, shares)


def test_digest_binds_chain_contract_task_root_and_shares() -> None:
    base = result_digest(31337, MARKET, 3, ROOT, SHARES)
    others = [
        result_digest(1, MARKET, 3, ROOT, SHARES),
        result_digest(31337, "0x" + "11" * 20, 3, ROOT, SHARES),
        result_digest(31337, MARKET, 4, ROOT, SHARES),
        result_digest(31337, MARKET, 3, keccak(text="other"), SHARES),
        result_digest(31337, MARKET, 3, ROOT, [400, 600]),
    ]
    assert base not in others and len(set(others)) == len(others)


def test_sign_and_recover_round_trip() -> None:
    member = Account.from_key(keccak(text="member-0"))
    signature = sign_result(member, 31337, MARKET, 3, ROOT, SHARES)
    assert len(signature) == 65 and signature[-1] in (27, 28)
    assert recover_result_signer(signature, 31337, MARKET, 3, ROOT, SHARES) == member.address
    assert recover_result_signer(signature, 31337, MARKET, 3, ROOT, [1, 999]) != member.address


def test_bad_inputs_are_named_errors() -> None:
    with pytest.raises(SignatureError):
        recover_result_signer(b"\x00" * 64, 31337, MARKET, 3, ROOT, SHARES)
    with pytest.raises(SignatureError):
        recover_result_signer(b"\x00" * 65, 31337, MARKET, 3, ROOT, SHARES)
    with pytest.raises(SignatureError):
        result_digest(31337, MARKET, 3, ROOT, [2**96])
    with pytest.raises(InvalidHash):
        result_digest(31337, MARKET, 3, b"short", SHARES)
    with pytest.raises(InvalidAddress):
        result_digest(31337, "0xnot-an-address", 3, ROOT, SHARES)
