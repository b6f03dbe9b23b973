"""The group's result, off the chain: shares, manifest checks, signatures (pure).

Every member checks the leader's ResultManifest against what the chain says before it
signs (:func:`check_manifest`), its own share included: the contract pays equal shares fixed
when the task was posted, and a manifest that claims another split is refused. The leader
checks every collected signature against the group (:func:`check_signature`). Signing
itself goes through a :data:`ResultSigner` built at the entry point from the miner's key
(:func:`make_signer`), so the daemon never holds the key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eth_account.signers.local import LocalAccount

from node.chain.models import split_reward
from node.chain.signing import SignatureError, recover_result_signer, sign_result
from node.documents.manifest import ResultManifest

ResultSigner = Callable[[int, str], bytes]
"""``(task_id, result_root) -> 65-byte EIP-712 signature``."""


def equal_shares(reward_wei: int, members: int) -> tuple[int, ...]:
    """The contract's split rule (:func:`node.chain.models.split_reward`): the reward split
    evenly in slot order, the remainder wei to slot 0."""
    if members < 1:
        raise ValueError("a group has at least one member")
    return tuple(split_reward(reward_wei, members))


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
    if group and tuple(manifest.shares_wei) != equal_shares(reward_wei, len(group)):
        problems.append(f"shares {list(manifest.shares_wei)} are not the contract's split of "
                        f"{reward_wei} wei over {len(group)} slots")
    return problems


def make_signer(account: LocalAccount, chain_id: int, market: str) -> ResultSigner:
    """A :data:`ResultSigner` for ``account`` on one TaskMarket deployment."""

    def sign(task_id: int, result_root: str) -> bytes:
        return sign_result(account, chain_id, market, task_id, result_root)

    return sign


def check_signature(signature: bytes, expected_signer: str, *, chain_id: int, market: str,
                    task_id: int, result_root: str) -> bool:
    """True when ``signature`` is ``expected_signer``'s over this result."""
    try:
        signer = recover_result_signer(signature, chain_id, market, task_id, result_root)
    except SignatureError:
        return False
    return signer.lower() == expected_signer.lower()
