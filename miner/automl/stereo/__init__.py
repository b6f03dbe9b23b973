"""Stereo depth: what is stereo-specific about the DispNetC-style once-for-all supernet.

Everything else — the registry (``ofa_dispnetc``, ``ofa_dispnetc_tiny``,
``ofa_dispnetc_micro``), progressive shrinking (:class:`~miner.automl.train.Trainer` with the
stereo task head), BatchNorm recalibration, export, the cost models and the search — is the
engine's own, shared with classification.

Modules:
- ``correlation``  the 1-D correlation layer (vectorised) and its reference loop
- ``static_net``   the static network, its JSON spec, and the parts the supernet shares
- ``supernet``     :class:`OFADispNetC`, its config and its cost layout
- ``loss``         multi-scale loss with a per-scale weight schedule; EPE and D1
- ``procedural``   seeded synthetic stereo pairs with exact disparity
- ``formats``      PFM, PNG (stdlib), KITTI 2015, Middlebury and SceneFlow readers
"""
