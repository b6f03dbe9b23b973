"""Deploy the contracts: :func:`deploy_contract` (any artifact) and :func:`deploy_market`.

Deployment goes through the same :class:`~node.chain.sender.TxSender` as every other
transaction (pre-flight of the init code, gas cap, fees, receipt). The devnet and the tests
call :func:`deploy_market`, which returns the :class:`~node.chain.models.Deployment` that
the other processes read from the deployment file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.chain.codec import ContractCodec
from node.chain.errors import DeploymentError
from node.chain.models import Deployment
from node.chain.sender import TxSender

logger = logging.getLogger(__name__)

DEPLOY_GAS_CAP = 8_000_000


class ContractArtifact(Protocol):
    """What deploying needs of an artifact (``node.chain.artifacts.Artifact`` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def abi(self) -> Any: ...

    @property
    def bytecode(self) -> bytes: ...


@dataclass(frozen=True)
class Deployed:
    """A freshly deployed contract."""

    name: str
    address: str
    block_number: int
    tx_hash: bytes
    gas_used: int


async def deploy_contract(
    sender: TxSender,
    artifact: ContractArtifact,
    *constructor_args: Any,
    gas_cap: int = DEPLOY_GAS_CAP,
) -> Deployed:
    """Deploy ``artifact`` from ``sender``'s account; returns the address and deploy block."""
    abi: Sequence[Mapping[str, Any]] = artifact.abi
    codec = ContractCodec(artifact.name, abi)
    init_code = codec.encode_deploy(artifact.bytecode, *constructor_args)
    receipt = await sender.send(None, init_code, gas_cap=gas_cap, label=f"deploy {artifact.name}")
    if receipt.contract_address is None:
        raise DeploymentError(path=artifact.name, reason="receipt carries no contract address")
    logger.info(
        "deployed contract=%s address=%s block=%d gas_used=%d",
        artifact.name, receipt.contract_address, receipt.block_number, receipt.gas_used,
    )
    return Deployed(
        artifact.name, receipt.contract_address, receipt.block_number, receipt.tx_hash,
        receipt.gas_used,
    )


async def deploy_market(
    sender: TxSender,
    *,
    with_token: bool = True,
    rpc_url: str = "",
    market_args: Sequence[Any] = (),
    market_artifact: ContractArtifact | None = None,
    token_artifact: ContractArtifact | None = None,
) -> Deployment:
    """Deploy TaskMarket (and MantaTestToken unless ``with_token`` is False).

    ``start_block`` is the market's deploy block: an indexer scans events from there.
    Artifacts default to the compiled ones in ``node/chain/artifacts``.
    """
    if market_artifact is None or (with_token and token_artifact is None):
        from node.chain.artifacts import load_artifact

        market_artifact = market_artifact or load_artifact("TaskMarket")
        token_artifact = token_artifact or load_artifact("MantaTestToken")
    token_address: str | None = None
    if with_token and token_artifact is not None:
        token_address = (await deploy_contract(sender, token_artifact)).address
    market = await deploy_contract(sender, market_artifact, *market_args)
    return Deployment(
        chain_id=sender.rpc.chain_id,
        task_market=market.address,
        token=token_address,
        start_block=market.block_number,
        rpc_url=rpc_url,
    )
