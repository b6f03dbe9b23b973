"""The AutoML engine: once-for-all supernets, progressive shrinking, export, search.

Modules (this package imports none of them, so an exported network loads with torch and
``static`` alone):
- ``space``        the search space (:class:`SearchSpace`), architectures (:class:`Arch`),
                   deterministic sub-network sampling, index form and additive cost tables
- ``errors``       the engine's error subtree
- ``ops``          elastic layers that slice shared weights (kernel, channels, BN, SE)
- ``blocks``       elastic MBConv blocks built from the ops
- ``supernet``     :class:`OFASupernet`: set_active / extract / reorder_channels / parameter masks
- ``registry``     supernet name → factory (``create_supernet``, ``list_supernets``)
- ``static``       plain-torch static networks built from a layer description
- ``export``       a sub-network as safetensors + arch.json (+ a torch.export program)
- ``efficiency``   analytic FLOPs/params tables, traced counts, measured latency tables,
                   for every supernet layout (:class:`~miner.automl.efficiency.CostLayout`)
- ``predictor``    the accuracy predictor (MLP over the architecture encoding)
- ``pareto``       non-dominated sorting and crowding, vectorised
- ``search``       constrained multi-objective evolutionary search
- ``toy_problem``  a synthetic cost/accuracy problem for tests and benchmarks
- ``data``         built-in and custom datasets, deterministic splits, resumable batches
- ``config``       frozen training settings (progressive-shrinking phases)
- ``train``        the task heads (classification, stereo), the training step (K
                   sub-networks, distillation) and loop
- ``checkpoint``   atomic, verified step checkpoints
- ``calibrate``    BatchNorm recalibration of a chosen sub-network
- ``runs``         local training and search runs over a run folder (the CLI's back end)
- ``stereo``       what is stereo-specific: the DispNetC-style supernet (registered beside
                   the classification ones), correlation layer, loss/metrics and stereo data
"""
