"""Result helpers: shares, manifest checks against the chain, signatures by recovery."""

from __future__ import annotations

import pytest
from eth_account import Account

from miner.daemon.result import check_manifest, check_signature, equal_shares, make_signer
from node.documents.manifest import Metrics, ResultManifest

LEADER = Account.from_key(b"\x01" * 32)
MEMBER = Account.from_key(b"\x02" * 32)
MARKET = "0x" + "12" * 20
SPEC = b"\x0a" * 32
H = "0x" + "0b" * 32


def manifest(**changes: object) -> ResultManifest:
    fields: dict[str, object] = {
        "task_id": 3, "spec_hash": "0x" + SPEC.hex(), "arch": {}, "weights_sha256": H,
        "arch_json_sha256": H, "metrics": Metrics(accuracy=0.5, flops=1, params=1),
        "pareto_front": (), "training_log_sha256": H,
        "group": (LEADER.address, MEMBER.address), "shares_wei": (51, 50)}
    fields.update(changes)
    return ResultManifest(**fields)


def test_equal_shares_give_the_remainder_to_the_leader() -> None:
    assert equal_shares(101, 2) == (51, 50)
    assert equal_shares(10**18, 3) == (333333333333333334, 333333333333333333,
                                       333333333333333333)
    assert sum(equal_shares(7, 7)) == 7
    with pytest.raises(ValueError):
        equal_shares(1, 0)


@pytest.mark.parametrize(("changes", "problem"), [
    ({}, None),
    ({"task_id": 4}, "task id 4"),
    ({"spec_hash": H}, "spec hash"),
    ({"group": (MEMBER.address, LEADER.address)}, "group differs"),
    ({"shares_wei": (50, 50)}, "not the contract's split"),
    # the leader cannot take more than the contract's split, even when the sum is right
    ({"shares_wei": (101, 0)}, "not the contract's split"),
    ({"shares_wei": (50, 51)}, "not the contract's split"),
])
def test_check_manifest(changes: dict[str, object], problem: str | None) -> None:
    problems = check_manifest(manifest(**changes), task_id=3, spec_hash=SPEC,
                              group=[LEADER.address.lower(), MEMBER.address], reward_wei=101)
    assert (problems == []) if problem is None else any(problem in p for p in problems)


def test_signatures_verify_only_for_their_signer_and_result() -> None:
    sign = make_signer(MEMBER, 31337, MARKET)
    root = manifest().result_root()
    signature = sign(3, root)
    common = {"chain_id": 31337, "market": MARKET, "task_id": 3}
    assert check_signature(signature, MEMBER.address, result_root=root, **common)
    assert not check_signature(signature, LEADER.address, result_root=root, **common)
    assert not check_signature(signature, MEMBER.address, result_root=H, **common)
    assert not check_signature(b"\x00" * 10, MEMBER.address, result_root=root, **common)
