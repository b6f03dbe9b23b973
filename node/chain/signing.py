"""EIP-712 signatures over a group's result.

The typed struct is ``Result(uint256 taskId,bytes32 resultRoot)``: the shares are not signed
because the contract fixes them itself (equal shares over the group's slots, see
:func:`node.chain.models.split_reward`). Every member that approves a result signs the same
digest; the member that submits carries the signatures of a strict majority and the contract
recovers member ``i`` from ``signatures[i]``. The domain is ``{name: "MANTA TaskMarket",
version: "2", chainId, verifyingContract}`` (OpenZeppelin ``EIP712``), so a signature is
bound to one chain and one deployment.

:func:`result_digest` is pure (no key, no I/O) and is checked against the contract's
``resultDigest`` view by the integration tests; :func:`sign_result` and
:func:`recover_result_signer` wrap it.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_typing import Hash32
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

from node.chain.errors import ChainError
from node.chain.models import checksum_address, hash32

DOMAIN_NAME = "MANTA TaskMarket"
DOMAIN_VERSION = "2"
DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
RESULT_TYPEHASH = keccak(text="Result(uint256 taskId,bytes32 resultRoot)")


class SignatureError(ChainError):
    """A signature that is malformed or does not recover."""

    template = "bad result signature: {reason}"


def domain_separator(chain_id: int, verifying_contract: str) -> bytes:
    """The EIP-712 domain separator of one TaskMarket deployment."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                DOMAIN_TYPEHASH,
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                chain_id,
                checksum_address(verifying_contract),
            ],
        )
    )


def result_struct_hash(task_id: int, result_root: bytes | str) -> bytes:
    """``hashStruct(Result)``."""
    return keccak(
        abi_encode(["bytes32", "uint256", "bytes32"],
                   [RESULT_TYPEHASH, task_id, hash32(result_root)])
    )


def result_digest(
    chain_id: int,
    verifying_contract: str,
    task_id: int,
    result_root: bytes | str,
) -> bytes:
    """The 32-byte EIP-712 digest every member signs (``0x1901 ‖ domain ‖ structHash``)."""
    return keccak(
        b"\x19\x01"
        + domain_separator(chain_id, verifying_contract)
        + result_struct_hash(task_id, result_root)
    )


def sign_result(
    account: LocalAccount,
    chain_id: int,
    verifying_contract: str,
    task_id: int,
    result_root: bytes | str,
) -> bytes:
    """A 65-byte ``r ‖ s ‖ v`` signature (v = 27/28) of the result digest."""
    digest = result_digest(chain_id, verifying_contract, task_id, result_root)
    signed = account.unsafe_sign_hash(Hash32(digest))
    return bytes(signed.signature)


def recover_result_signer(
    signature: bytes,
    chain_id: int,
    verifying_contract: str,
    task_id: int,
    result_root: bytes | str,
) -> str:
    """The checksummed address that produced ``signature`` over this result."""
    if len(signature) != 65:
        raise SignatureError(reason=f"expected 65 bytes, got {len(signature)}")
    digest = result_digest(chain_id, verifying_contract, task_id, result_root)
    try:
        return str(Account._recover_hash(digest, signature=signature))
    except (BadSignature, ValidationError, ValueError) as exc:
        raise SignatureError(reason=str(exc)) from exc
