"""The group's result, off the chain: shares, manifest checks, signatures (pure).

Every member checks the leader's ResultManifest against what the chain says before it
signs (:func:`check_manifest`); the leader checks every collected signature against the
group (:func:`check_signature`). Signing itself goes through a :data:`ResultSigner` built
at the entry point from the miner's key (:func:`make_signer`), so the daemon never holds
the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eth_account.signers.local import LocalAccount

from node.chain.signing import SignatureError, recover_result_signer, sign_result
from node.documents.manifest import ResultManifest

ResultSigner = Callable[[int, str, Sequence[int]], bytes]
"""``(task_id, result_root, shares_wei) -> 65-byte EIP-712 signature``."""


def equal_shares(reward_wei: int, members: int) -> tuple[int, ...]:
    """The reward split evenly in slot order; the remainder wei go to the leader (slot 0)."""
    if members < 1:
        raise ValueError("a group has at least one member")
    base, rest = divmod(reward_wei, members)
    return (base + rest,) + (base,) * (members - 1)


def check_manifest(manifest: ResultManifest, *, task_id: int, spec_hash: bytes,
                   group: Sequence[str], reward_wei: int) -> list[str]:
    """What is wrong with ``manifest`` for this task (empty when a member may sign it)."""
    problems = []
    if manifest.task_id != task_id:
        problems.append(f"task id {manifest.task_id}, expected {task_id}")
    if manifest.spec_hash.lower() != "0x" + spec_hash.hex():
        problems.append("spec hash differs from the chain's")
    if [m.lower() for m in manifest.group] != [m.lower() for m in group]:
        problems.append("group differs from the chain's members (or their order)")
    if sum(manifest.shares_wei) != reward_wei:
        problems.append(f"shares sum to {sum(manifest.shares_wei)}, reward is {reward_wei}")
    return problems


def make_signer(account: LocalAccount, chain_id: int, market: str) -> ResultSigner:
    """A :data:`ResultSigner` for ``account`` on one TaskMarket deployment."""

    def sign(task_id: int, result_root: str, shares_wei: Sequence[int]) -> bytes:
        return sign_result(account, chain_id, market, task_id, result_root, shares_wei)

    return sign


def check_signature(signature: bytes, expected_signer: str, *, chain_id: int, market: str,
                    task_id: int, result_root: str, shares_wei: Sequence[int]) -> bool:
    """True when ``signature`` is ``expected_signer``'s over this result."""
    try:
        signer = recover_result_signer(signature, chain_id, market, task_id, result_root,
                                       shares_wei)
    except SignatureError:
        return False
    return signer.lower() == expected_signer.lower()
