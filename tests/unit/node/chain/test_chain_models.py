"""Models: addresses and hashes validated at construction; deployment files round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from node.chain.errors import DeploymentError, InvalidAddress, InvalidHash
from node.chain.models import (
    Deployment,
    TaskParams,
    TaskPosted,
    TaskState,
    TaskView,
    TxReceipt,
    camel_to_snake,
    checksum_address,
    hash32,
)

ADDR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def params(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        reward_wei=10**18, bond_wei=10**17, slots=2, claim_window_s=60, work_window_s=600,
        review_window_s=60, arbitration_window_s=60, arbiter=ADDR,
        spec_hash=b"\x01" * 32, validation_hash="0x" + "02" * 32,
    )
    return base | overrides


@pytest.mark.parametrize(
    "bad", ["", "0x12", ADDR[2:], ADDR.lower()[:-1] + "g", ADDR.replace("F", "f", 1), 5, None,
            b"\x00" * 19],
)
def test_bad_addresses_raise_invalid_address(bad: object) -> None:
    with pytest.raises(InvalidAddress):
        checksum_address(bad)
    with pytest.raises(InvalidAddress):
        TaskParams(**params(arbiter=bad))


def test_addresses_are_checksummed() -> None:
    assert checksum_address(ADDR.lower()) == ADDR
    assert checksum_address(bytes.fromhex(ADDR[2:])) == ADDR


@pytest.mark.parametrize("bad", [b"\x00" * 31, "0x" + "00" * 31, "00" * 32, "0x" + "zz" * 32, 3])
def test_bad_hashes_raise_invalid_hash(bad: object) -> None:
    with pytest.raises(InvalidHash):
        hash32(bad)
    with pytest.raises(InvalidHash):
        TaskParams(**params(spec_hash=bad))


def test_task_params_bounds_and_abi_order() -> None:
    p = TaskParams(**params())
    assert p.is_native and p.as_abi()[:4] == (p.token, 10**18, 10**17, 2)
    assert p.as_abi()[-2:] == (b"\x01" * 32, b"\x02" * 32)
    for bad in (dict(slots=0), dict(slots=33), dict(reward_wei=0), dict(bond_wei=2**96),
                dict(claim_window_s=-1), dict(work_window_s=2**32)):
        with pytest.raises(ValidationError):
            TaskParams(**params(**bad))
    with pytest.raises(ValidationError):
        p.__setattr__("slots", 3)  # frozen


def test_models_from_abi_names() -> None:
    assert camel_to_snake("specURI") == "spec_uri"
    assert camel_to_snake("disputesLost") == "disputes_lost"
    view = TaskView.from_abi({
        "client": ADDR.lower(), "token": "0x" + "00" * 20, "reward": 5, "bond": 1,
        "arbiter": ADDR, "slots": 2, "claimed": 1, "state": 2, "claimDeadline": 10,
        "workDeadline": 20, "settleDeadline": 0, "workWindow": 10, "reviewWindow": 5,
        "arbitrationWindow": 5, "specHash": b"\x01" * 32, "resultRoot": b"\x00" * 32,
        "someFutureField": 1,
    })
    assert view.state is TaskState.RUNNING and view.client == ADDR and view.is_native
    event = TaskPosted.from_abi(
        {"taskId": 1, "client": ADDR, "token": ADDR, "reward": 5, "bond": 1, "slots": 1,
         "claimDeadline": 9, "workWindow": 1, "reviewWindow": 1, "arbitrationWindow": 1,
         "arbiter": ADDR, "specHash": b"\x01" * 32, "validationHash": b"\x02" * 32,
         "specURI": "file://spec"},
        block_number=3, block_hash=b"\x03" * 32, tx_hash=b"\x04" * 32, log_index=0,
    )
    assert (event.task_id, event.reward_wei, event.spec_uri) == (1, 5, "file://spec")


def test_receipt_from_rpc() -> None:
    receipt = TxReceipt.from_rpc({
        "transactionHash": b"\x01" * 32, "blockNumber": 4, "blockHash": b"\x02" * 32,
        "gasUsed": 21000, "effectiveGasPrice": 7, "status": 1, "contractAddress": None,
        "logs": [{"address": ADDR, "topics": [b"\x05" * 32], "data": b"\x01",
                  "blockNumber": 4, "blockHash": b"\x02" * 32,
                  "transactionHash": b"\x01" * 32, "logIndex": 0}],
    })
    assert receipt.status and receipt.logs[0].data == b"\x01"
    assert receipt.model_dump(mode="json")["tx_hash"] == "0x" + "01" * 32


def test_deployment_round_trip_and_bad_files(tmp_path: Path) -> None:
    deployment = Deployment(chain_id=31337, task_market=ADDR.lower(), token=None,
                            start_block=3, rpc_url="http://127.0.0.1:8545")
    path = tmp_path / "sub" / "deployment.json"
    deployment.save(path)
    assert Deployment.load(path) == deployment and deployment.task_market == ADDR
    for content in ("not json", "[1]", '{"chain_id": 1}'):
        path.write_text(content)
        with pytest.raises(DeploymentError):
            Deployment.load(path)
    path.write_text('{"chain_id": 1, "task_market": "0x12"}')
    with pytest.raises(InvalidAddress):
        Deployment.load(path)
    with pytest.raises(DeploymentError):
        Deployment.load(tmp_path / "missing.json")
