"""What every MANTA participant runs.

Modules:
- ``errors``     the project's error root (:class:`MantaError`) and its shared subtrees
- ``config``     process settings (pydantic-settings, ``MANTA_`` prefix, optional TOML); the
                 one place that reads the environment
- ``documents``  canonical JSON, the TaskSpec and the ResultManifest (DESIGN §4)
- ``chain``      contract artifacts, revert decoding, async chain client, tx sender, event indexer
- ``identity``   encrypted keystores (eth-account V3 JSON) and password sources
- ``transport``  the authenticated aiohttp channel between miners (handshake, AEAD frames)
- ``devnet``     a local anvil chain with the contracts deployed
- ``demo``       the chain part of the demo: one task from post to withdraw on a devnet
- ``cli_errors`` the one error handler every command line shares
- ``cli``        the ``manta-node`` command

``node`` imports nothing else of ours and never imports torch.
"""
