"""One chain test suite, two backends: eth-tester in process and a real anvil node.

The session fixture ``chain_session`` is parametrised over both backends; for each it
connects an :class:`RpcPool`, funds a cast of local accounts (client, four miners, arbiter,
an outsider; ``pauper`` stays unfunded), deploys MantaTestToken and TaskMarket through
:func:`deploy_market`, registers the miners' endpoints (claiming does not need it) and mints
them tokens. The function fixture
``chain`` takes an ``evm_snapshot`` before each test and ``evm_revert``s after it (then
resyncs every sender's nonce), so tests are isolated without redeploying.
Time travel: ``await chain.increase_time(seconds)`` (``evm_increaseTime`` + ``evm_mine`` on
anvil, ``testing_timeTravel`` on eth-tester). Payouts are pushed by the settling call, so money
is checked on balances: ``chain.balances(...)`` before and after, ``Chain.fee(receipt)`` for
the gas an account paid itself.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from node.chain.deploy import deploy_market
from node.chain.market import MarketAbis, TaskMarket
from node.chain.models import ZERO_ADDRESS, Deployment, TaskParams, TxReceipt
from node.chain.rpc import RpcConfig, RpcPool
from node.chain.sender import SenderConfig, TxSender
from node.chain.token import Erc20

ROOT = Path(__file__).resolve().parents[3]
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
ETHER = 10**18
CAST = ("client", "miner0", "miner1", "miner2", "miner3", "arbiter", "outsider", "pauper")
FUNDED_WEI = 1_000 * ETHER
TOKENS_WEI = 1_000_000 * ETHER
ROOT_HASH = keccak(text="result manifest")
CLAIM_S, WORK_S, REVIEW_S, ARBITRATION_S = 100, 1_000, 100, 100
TEST_SENDER = SenderConfig(receipt_timeout_s=20.0, poll_interval_s=0.005, bump_after_s=60.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """One anvil per test session on a free loopback port, killed at teardown."""
    if not ANVIL.exists() and shutil.which("anvil") is None:
        pytest.skip("anvil binary not installed (npm ci)")
    port = free_port()
    binary = str(ANVIL) if ANVIL.exists() else "anvil"
    process = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None:
                pytest.fail(f"anvil exited with {process.returncode}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Chain:
    """Everything a chain test needs on one backend (constants as class attributes, because
    test modules cannot import this conftest under ``--import-mode=importlib``)."""

    ETHER: ClassVar[int] = ETHER
    ROOT_HASH: ClassVar[bytes] = ROOT_HASH
    CLAIM_S: ClassVar[int] = CLAIM_S
    WORK_S: ClassVar[int] = WORK_S
    REVIEW_S: ClassVar[int] = REVIEW_S
    ARBITRATION_S: ClassVar[int] = ARBITRATION_S

    backend: str
    pool: RpcPool
    accounts: dict[str, LocalAccount]
    senders: dict[str, TxSender]
    deployment: Deployment
    abis: MarketAbis

    def market(self, who: str = "client") -> TaskMarket:
        """The market facade sending from ``who``'s account."""
        return TaskMarket(self.pool, self.deployment.task_market, self.abis, self.senders[who],
                          self.deployment.start_block)

    def token(self, who: str = "client") -> Erc20:
        assert self.deployment.token is not None
        return Erc20(self.pool, self.deployment.token, self.abis.token, self.senders[who])

    def address(self, who: str) -> str:
        return str(self.accounts[who].address)

    async def balance(self, who: str) -> int:
        return await self.pool.get_balance(self.address(who))

    async def now(self) -> int:
        return int((await self.pool.get_block("latest"))["timestamp"])

    async def increase_time(self, seconds: int) -> None:
        """Move chain time forward by ``seconds`` and mine a block at the new time."""
        if self.backend == "anvil":
            await self.pool.request("evm_increaseTime", [seconds])
            await self.pool.request("evm_mine", [])
        else:
            # eth-tester mines the travel block one second before the target
            await self.pool.request("testing_timeTravel", [await self.now() + seconds + 1])

    def params(
        self,
        *,
        erc20: bool = False,
        reward_wei: int = ETHER,
        bond_wei: int = ETHER // 10,
        slots: int = 1,
        arbiter: str = "arbiter",
    ) -> TaskParams:
        """Task parameters with the suite's windows (claim 100 s, work 1000 s, review and
        arbitration 100 s)."""
        token = self.deployment.token if erc20 else ZERO_ADDRESS
        return TaskParams(
            token=token, reward_wei=reward_wei, bond_wei=bond_wei, slots=slots,
            claim_window_s=CLAIM_S, work_window_s=WORK_S, review_window_s=REVIEW_S,
            arbitration_window_s=ARBITRATION_S, arbiter=self.address(arbiter),
            spec_hash=keccak(text="spec"), validation_hash=keccak(text="validation"),
        )

    async def post(self, **overrides: Any) -> int:
        """Post a task as the client; its id."""
        posted = await self.market("client").post_task(self.params(**overrides), "file://spec")
        return posted.task_id

    async def claim(self, task_id: int, miners: list[str]) -> None:
        for miner in miners:
            await self.market(miner).claim(task_id)

    def signatures(
        self, task_id: int, miners: list[str], root: bytes = ROOT_HASH
    ) -> dict[str, bytes]:
        """``{member address: its EIP-712 signature of the result}`` for ``miners``."""
        from node.chain.signing import sign_result

        return {
            self.address(m): sign_result(self.accounts[m], self.pool.chain_id,
                                         self.deployment.task_market, task_id, root)
            for m in miners
        }

    async def submit(
        self, task_id: int, miners: list[str], root: bytes = ROOT_HASH
    ) -> TxReceipt:
        """``miners[0]`` submits with the signatures of every one of ``miners`` (its own is
        implied by sending); the contract wants a strict majority of the group among them."""
        signatures = self.signatures(task_id, miners[1:], root)
        return await self.market(miners[0]).submit_result(
            task_id, root, "http://miner0/result", signatures
        )

    @staticmethod
    def fee(receipt: TxReceipt) -> int:
        """The wei the sender paid for ``receipt``'s gas."""
        return receipt.gas_used * receipt.effective_gas_price_wei

    async def balances(self, *who: str) -> dict[str, int]:
        """Native balances by cast name, plus the market's own under ``"market"``."""
        found = {name: await self.balance(name) for name in who}
        found["market"] = await self.pool.get_balance(self.deployment.task_market)
        return found

    async def snapshot(self) -> Any:
        return await self.pool.request("evm_snapshot", [])

    async def revert(self, snapshot_id: Any) -> None:
        await self.pool.request("evm_revert", [snapshot_id])
        for sender in self.senders.values():
            await sender.resync_nonce()


async def connect(backend: str, anvil_url: str | None) -> RpcPool:
    if backend == "anvil":
        assert anvil_url is not None
        return await RpcPool.create(RpcConfig(urls=(anvil_url,), chain_id=31337, timeout_s=10))
    from web3.providers.eth_tester import AsyncEthereumTesterProvider

    return await RpcPool.create(providers=[AsyncEthereumTesterProvider()])


async def fund(pool: RpcPool, recipients: list[str]) -> None:
    """Pay each recipient from the backend's unlocked, pre-funded first account."""
    funder = (await pool.w3.eth.accounts)[0]
    for address in recipients:
        tx_hash = await pool.w3.eth.send_transaction(
            {"from": funder, "to": address, "value": FUNDED_WEI}  # type: ignore[typeddict-item]
        )
        await pool.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=20, poll_latency=0.01)


async def build_chain(backend: str, anvil_url: str | None) -> Chain:
    pool = await connect(backend, anvil_url)
    accounts = {name: Account.from_key(keccak(text=f"manta-chain-test-{name}")) for name in CAST}
    await fund(pool, [a.address for n, a in accounts.items() if n != "pauper"])
    abis = MarketAbis.from_artifacts()
    senders = {n: await TxSender.create(pool, a, TEST_SENDER) for n, a in accounts.items()}
    deployment = await deploy_market(senders["client"], with_token=True)
    chain = Chain(backend, pool, accounts, senders, deployment, abis)
    for index in range(4):
        name = f"miner{index}"
        await chain.market(name).register(f"http://127.0.0.1:{9100 + index}")
        await chain.token("client").mint(chain.address(name), TOKENS_WEI)
    await chain.token("client").mint(chain.address("client"), TOKENS_WEI)
    return chain


@pytest.fixture(scope="session")
def chain_abis() -> MarketAbis:
    """The ABIs from the committed artifacts (no chain needed)."""
    return MarketAbis.from_artifacts()


@pytest_asyncio.fixture(
    scope="session", loop_scope="session",
    params=["eth_tester", pytest.param("anvil", marks=pytest.mark.anvil)],
)
async def chain_session(request: pytest.FixtureRequest) -> AsyncIterator[Chain]:
    anvil = request.getfixturevalue("anvil_url") if request.param == "anvil" else None
    chain = await build_chain(request.param, anvil)
    yield chain
    await chain.pool.close()


@pytest_asyncio.fixture(loop_scope="session")
async def chain(chain_session: Chain) -> AsyncIterator[Chain]:
    """The session chain, rolled back to its state before the test afterwards."""
    snapshot_id = await chain_session.snapshot()
    yield chain_session
    await chain_session.revert(snapshot_id)
