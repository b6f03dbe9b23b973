"""The miner: the daemon a GPU-rig operator runs and the AutoML engine it sells.

Subpackages:
- ``automl``       once-for-all supernets, progressive shrinking, export, efficiency models, search
- ``distributed``  gradient averaging inside a rig (torch.distributed) and between miners

``miner`` imports ``node`` and never ``client``.
"""
