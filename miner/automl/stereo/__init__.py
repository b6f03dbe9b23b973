"""Stereo depth: the once-for-all DispNetC-style supernet and everything around it.

Modules:
- ``correlation``  the 1-D correlation layer (vectorised) and its reference loop
- ``static_net``   the static network, its JSON spec, and the parts the supernet shares
- ``supernet``     :class:`OFADispNetC`, its config and registered variants
- ``cost``         analytic and traced MACs, parameter counts, additive cost tables
- ``loss``         multi-scale loss with a per-scale weight schedule; EPE and D1
- ``train``        a sandwich training step, BatchNorm recalibration, evaluation
- ``procedural``   seeded synthetic stereo pairs with exact disparity
- ``formats``      PFM, PNG (stdlib), KITTI 2015, Middlebury and SceneFlow readers
- ``export``       export / load a stereo sub-network artifact
"""
