"""The AutoML engine: once-for-all supernets, progressive shrinking, export, search.

Modules:
- ``space``      the search space (:class:`SearchSpace`), architectures (:class:`Arch`),
                 deterministic sub-network sampling and the architecture encoding
- ``errors``     the engine's error subtree
"""
