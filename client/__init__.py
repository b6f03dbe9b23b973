"""The client: the ``manta`` CLI and the API behind it. Imports ``node``, never ``miner``."""
