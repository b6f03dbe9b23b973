"""An async JSON-RPC pool over several endpoints: timeouts, retries, fail-over, chain-id check.

Every chain read or write in MANTA goes through :class:`RpcPool`. One call is an operation on
an ``AsyncWeb3`` bound to one endpoint; the pool runs it with a per-call timeout, retries
*transport* failures (refused connection, timeout, HTTP 5xx/429) with exponential backoff and
full jitter, then fails over to the next endpoint, and raises :class:`RpcUnavailable` with the
last error of every endpoint when none answered. Anything else — a revert, an RPC error
answer, a bad argument — is not retried: it would fail the same way again (and a revert is
never a reason to re-send).

Each endpoint's chain id is checked before first use (:class:`ChainIdMismatch`), so a
wrong URL never gets a signed transaction. With ``max_block_age_s`` set, an endpoint whose
latest block is older than that is treated like an unreachable one (:class:`StaleEndpoint`,
as web3's stalecheck middleware does); the freshness is cached until the allowed age of the
last fresh block runs out, so it costs one extra request now and then, not one per call.
Leave it unset on dev chains, which mine only when there is a transaction.

Endpoints are URLs (one ``AsyncHTTPProvider`` each) or injected provider objects, e.g.
web3's ``AsyncEthereumTesterProvider`` for in-process tests:
``await RpcPool.create(providers=[AsyncEthereumTesterProvider()])``.

The typed helpers (``get_balance``, ``call``, ``send_raw_transaction``…) form the
:class:`EthRpc` protocol the transaction sender depends on, so that the sender can be unit
tested against a fake.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import aiohttp
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    TransactionNotFound,
)
from web3.providers.async_base import AsyncBaseProvider
from web3.types import RPCEndpoint

from node.chain.errors import ChainIdMismatch, RpcError, RpcUnavailable, StaleEndpoint

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures of the transport, worth a retry and a fail-over. Reverts and RPC error answers
#: are deliberately absent.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    TimeoutError,
    ConnectionError,
    ProviderConnectionError,
    RequestTimedOut,
    TooManyRequests,
    StaleEndpoint,
)


@dataclass(frozen=True)
class RpcConfig:
    """How the pool reaches the chain.

    ``chain_id`` None adopts the first endpoint's chain id (and still requires the others to
    agree). Backoff before retry ``n`` (0-based) is uniform in
    ``[0, min(backoff_max_s, backoff_initial_s * 2**n)]`` ("full jitter").
    """

    urls: tuple[str, ...] = ()
    chain_id: int | None = None
    timeout_s: float = 10.0
    attempts_per_endpoint: int = 3
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 2.0
    max_block_age_s: float | None = None


class EthRpc(Protocol):
    """The chain operations the transaction sender needs (implemented by :class:`RpcPool`)."""

    @property
    def chain_id(self) -> int: ...

    async def get_block(self, block: str | int = "latest") -> Mapping[str, Any]: ...

    async def get_balance(self, address: str, block: str | int = "latest") -> int: ...

    async def get_nonce(self, address: str, block: str | int = "pending") -> int: ...

    async def call(self, tx: Mapping[str, Any], block: str | int = "latest") -> bytes: ...

    async def estimate_gas(self, tx: Mapping[str, Any]) -> int: ...

    async def max_priority_fee(self) -> int: ...

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes: ...

    async def get_receipt(self, tx_hash: bytes) -> Mapping[str, Any] | None: ...


@dataclass
class Endpoint:
    """One way to reach the chain: a label for logs and errors, and its ``AsyncWeb3``."""

    label: str
    w3: AsyncWeb3[Any]
    verified: bool = False
    fresh_until: float = 0.0  # wall-clock time until which the endpoint counts as fresh


def backoff_delay_s(attempt: int, config: RpcConfig, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (0-based)."""
    ceiling = min(config.backoff_max_s, config.backoff_initial_s * (2**attempt))
    return rng.uniform(0.0, ceiling)


def redact_url(url: str) -> str:
    """``url`` fit for logs and errors: hosted RPC URLs often carry an API key in the path or
    query (``https://host/v3/<key>``), so only scheme, host and port are kept."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return "<rpc url>"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    hidden = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def http_endpoint(url: str, timeout_s: float) -> Endpoint:
    """An endpoint for ``url`` with web3's own retries off (the pool retries)."""
    provider = AsyncHTTPProvider(
        url,
        request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)},
        exception_retry_configuration=None,
    )
    return Endpoint(redact_url(url), AsyncWeb3(provider))


class RpcPool:
    """Async access to one chain through one or more endpoints (see the module docstring)."""

    def __init__(
        self, endpoints: Sequence[Endpoint], config: RpcConfig, rng: random.Random | None = None
    ) -> None:
        if not endpoints:
            raise RpcError(method="connect", url="-", reason="no endpoint configured")
        self._endpoints = list(endpoints)
        self._config = config
        self._rng = rng or random.Random()
        self._active = 0
        self._chain_id = config.chain_id

    @classmethod
    async def create(
        cls,
        config: RpcConfig | None = None,
        *,
        providers: Sequence[AsyncBaseProvider] = (),
        rng: random.Random | None = None,
    ) -> RpcPool:
        """Build the pool from ``config.urls`` and injected ``providers``, then connect."""
        config = config or RpcConfig()
        endpoints = [http_endpoint(url, config.timeout_s) for url in config.urls]
        endpoints += [
            Endpoint(f"{type(p).__name__}#{n}", AsyncWeb3(p)) for n, p in enumerate(providers)
        ]
        pool = cls(endpoints, config, rng)
        try:
            await pool.connect()
        except BaseException:
            await pool.close()  # no half-open HTTP sessions left behind
            raise
        return pool

    @property
    def chain_id(self) -> int:
        """The chain every endpoint was checked against (known once connected)."""
        if self._chain_id is None:
            raise RpcError(method="eth_chainId", url="-", reason="pool not connected yet")
        return self._chain_id

    @property
    def config(self) -> RpcConfig:
        return self._config

    @property
    def w3(self) -> AsyncWeb3[Any]:
        """The active endpoint's ``AsyncWeb3`` (for one-off use; prefer :meth:`run`)."""
        return self._endpoints[self._active].w3

    @property
    def labels(self) -> tuple[str, ...]:
        """The endpoints as shown in logs and errors (URLs without path, query or user)."""
        return tuple(e.label for e in self._endpoints)

    async def connect(self) -> None:
        """Check the chain id of the first endpoint that answers (the others on first use)."""

        async def verified(w3: AsyncWeb3[Any]) -> int:
            return self.chain_id  # reaching here means _attempt verified the endpoint

        await self.run("eth_chainId", verified)

    async def close(self) -> None:
        """Close every HTTP session the pool opened."""
        for endpoint in self._endpoints:
            if isinstance(endpoint.w3.provider, AsyncHTTPProvider):
                await endpoint.w3.provider.disconnect()

    async def _verify(self, endpoint: Endpoint) -> None:
        async with asyncio.timeout(self._config.timeout_s):
            actual = int(await endpoint.w3.eth.chain_id)
        if self._chain_id is None:
            self._chain_id = actual
            logger.info("rpc connected endpoint=%s chain_id=%d", endpoint.label, actual)
        elif actual != self._chain_id:
            raise ChainIdMismatch(url=endpoint.label, expected=self._chain_id, actual=actual)
        endpoint.verified = True

    async def _check_fresh(self, endpoint: Endpoint, max_age_s: float) -> None:
        async with asyncio.timeout(self._config.timeout_s):
            block = await endpoint.w3.eth.get_block("latest")
        timestamp = int(block["timestamp"])
        age_s = time.time() - timestamp
        if age_s > max_age_s:
            raise StaleEndpoint(url=endpoint.label, age_s=round(age_s), max_age_s=max_age_s)
        endpoint.fresh_until = timestamp + max_age_s

    async def _attempt(self, endpoint: Endpoint, op: Callable[[AsyncWeb3[Any]], Awaitable[T]]) -> T:
        if not endpoint.verified:
            await self._verify(endpoint)
        max_age_s = self._config.max_block_age_s
        if max_age_s is not None and time.time() > endpoint.fresh_until:
            await self._check_fresh(endpoint, max_age_s)
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the call completes (gh-86296), leaving a cancelled poller running.
        async with asyncio.timeout(self._config.timeout_s):
            return await op(endpoint.w3)

    async def run(self, method: str, op: Callable[[AsyncWeb3[Any]], Awaitable[T]]) -> T:
        """Run ``op`` on the active endpoint, retrying and failing over on transport errors.

        ``method`` names the call in logs and errors. Non-transport exceptions propagate
        unchanged on the first occurrence.
        """
        count = len(self._endpoints)
        errors: list[str] = []
        labels: list[str] = []
        for offset in range(count):
            index = (self._active + offset) % count
            endpoint = self._endpoints[index]
            last = ""
            for attempt in range(self._config.attempts_per_endpoint):
                try:
                    result = await self._attempt(endpoint, op)
                except TRANSPORT_ERRORS as exc:
                    last = f"{type(exc).__name__}: {exc}".strip()
                    logger.warning(
                        "rpc transport error method=%s endpoint=%s attempt=%d error=%s",
                        method, endpoint.label, attempt + 1, last,
                    )
                    if attempt + 1 < self._config.attempts_per_endpoint:
                        await asyncio.sleep(backoff_delay_s(attempt, self._config, self._rng))
                    continue
                if index != self._active:
                    logger.warning("rpc failed over to endpoint=%s", endpoint.label)
                    self._active = index
                return result
            errors.append(last)
            labels.append(endpoint.label)
        raise RpcUnavailable(method, labels, errors)

    async def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """A raw JSON-RPC call (``evm_snapshot``, ``anvil_*``…); RPC errors raise RpcError."""

        async def op(w3: AsyncWeb3[Any]) -> Any:
            response = await w3.provider.make_request(RPCEndpoint(method), list(params))
            if response.get("error"):
                raise RpcError(method=method, url=self.labels[self._active],
                               reason=response["error"])
            return response.get("result")

        return await self.run(method, op)

    # ---- the EthRpc protocol -------------------------------------------------------------

    async def get_block(self, block: str | int = "latest") -> Mapping[str, Any]:
        return await self.run("eth_getBlockByNumber",
                              lambda w3: w3.eth.get_block(cast(Any, block)))

    async def block_number(self) -> int:
        return int(await self.run("eth_blockNumber", lambda w3: w3.eth.block_number))

    async def get_balance(self, address: str, block: str | int = "latest") -> int:
        return int(await self.run(
            "eth_getBalance", lambda w3: w3.eth.get_balance(cast(Any, address), cast(Any, block))
        ))

    async def get_nonce(self, address: str, block: str | int = "pending") -> int:
        return int(await self.run(
            "eth_getTransactionCount",
            lambda w3: w3.eth.get_transaction_count(cast(Any, address), cast(Any, block)),
        ))

    async def get_code(self, address: str, block: str | int = "latest") -> bytes:
        return bytes(await self.run(
            "eth_getCode", lambda w3: w3.eth.get_code(cast(Any, address), cast(Any, block))
        ))

    async def call(self, tx: Mapping[str, Any], block: str | int = "latest") -> bytes:
        result = await self.run(
            "eth_call", lambda w3: w3.eth.call(cast(Any, dict(tx)), cast(Any, block))
        )
        return bytes(result)

    async def estimate_gas(self, tx: Mapping[str, Any]) -> int:
        return int(await self.run("eth_estimateGas",
                                  lambda w3: w3.eth.estimate_gas(cast(Any, dict(tx)))))

    async def max_priority_fee(self) -> int:
        return int(await self.run("eth_maxPriorityFeePerGas",
                                  lambda w3: w3.eth.max_priority_fee))

    async def send_raw_transaction(self, raw_tx: bytes) -> bytes:
        return bytes(await self.run("eth_sendRawTransaction",
                                    lambda w3: w3.eth.send_raw_transaction(raw_tx)))

    async def get_receipt(self, tx_hash: bytes) -> Mapping[str, Any] | None:
        async def op(w3: AsyncWeb3[Any]) -> Mapping[str, Any] | None:
            try:
                receipt = await w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
            return cast(Mapping[str, Any], receipt)

        return await self.run("eth_getTransactionReceipt", op)

    async def get_logs(self, log_filter: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        logs = await self.run(
            "eth_getLogs", lambda w3: w3.eth.get_logs(cast(Any, dict(log_filter)))
        )
        return [cast(Mapping[str, Any], log) for log in logs]
