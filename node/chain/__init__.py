"""Chain access: everything MANTA does on an EVM chain goes through this package.

Modules (pure ones first, I/O at the edges):

- ``errors``     the ``ChainError`` subtree (``ContractRevert``, ``RpcUnavailable``,
                 ``ChainIdMismatch``, ``InsufficientFunds``, ``GasCapExceeded``, ``TxTimeout``…)
- ``models``     frozen pydantic models: ``TaskParams``, ``TaskView``, ``TaskState``,
                 ``Reputation``, one model per contract event, ``TxReceipt``, ``Deployment``;
                 address/hash validation (``checksum_address``, ``hash32``)
- ``revert``     pure decoding of revert data into a named ``ContractRevert``, identical for
                 anvil (JSON-RPC error data) and eth-tester (``TransactionFailed``)
- ``codec``      pure ABI encoding of calls and decoding of outputs and event logs
- ``signing``    EIP-712 digest, signature and recovery of a group's ``Result``
- ``artifacts``  the compiled contracts (ABI + bytecode) shipped in ``chain/artifacts/``
- ``compile``    rebuilds those artifacts from ``contracts/src`` (solc-js; dev only)
- ``rpc``        ``RpcPool``: several endpoints, timeouts, retry with backoff + jitter,
                 fail-over, chain-id and staleness checks; accepts injected providers
                 (eth-tester)
- ``sender``     ``TxSender``: one local account; nonce, gas cap, EIP-1559 fees,
                 pre-flight, receipt wait, fee bump of stuck transactions
- ``token``      ``Erc20``: balance, allowance, approve, mint (MantaTestToken)
- ``market``     ``TaskMarket``: one typed method per contract function and event
- ``deploy``     ``deploy_contract`` and ``deploy_market`` (returns a ``Deployment``)
- ``indexer``    the event indexer that drives the daemons

Typical use::

    pool = await RpcPool.create(RpcConfig(urls=("http://127.0.0.1:8545",), chain_id=31337))
    sender = await TxSender.create(pool, account)
    market = await TaskMarket.create(pool, deployment.task_market, sender,
                                    start_block=deployment.start_block)
    posted = await market.post_task(params, spec_uri)
"""
