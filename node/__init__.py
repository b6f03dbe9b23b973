"""What every MANTA participant runs.

Modules:
- ``errors``     the project's error root (:class:`MantaError`) and its shared subtrees
- ``chain``      contract artifacts, revert decoding, async chain client, tx sender, event indexer
- ``identity``   encrypted keystores (eth-account V3 JSON) and password sources
- ``transport``  the authenticated aiohttp channel between miners (handshake, AEAD frames)
- ``devnet``     a local anvil chain with the contracts deployed
- ``cli``        the ``manta-node`` command

``node`` imports nothing else of ours and never imports torch.
"""
