"""The miner daemon: what a GPU-rig operator runs to earn from the TaskMarket.

Modules (pure ones first, I/O at the edges):

- ``errors``    the :class:`DaemonError` subtree
- ``settings``  :class:`MinerSettings` (pydantic-settings, ``MANTA_`` prefix, TOML file)
- ``policy``    :func:`decide`: whether to claim a posted task, with the reason (pure)
- ``metrics``   a small Prometheus registry and its text exposition (no global state)
- ``store``     :class:`StateStore`: SQLite tasks, transactions (intent records), checkpoints,
                artifacts and signatures, so that a restart after ``kill -9`` resumes safely
- ``artifacts`` :class:`ArtifactStore`: content-addressed files, hash-checked when stored
- ``progress``  :class:`ProgressHub`: latest snapshot per task, fan-out to live subscribers,
                ETA; :class:`ProgressTailer` follows a training subprocess's JSON-lines file
- ``server``    :func:`create_app`: the miner's aiohttp app (artifacts, manifests, progress,
                SSE, ``/metrics``, ``/healthz``); the HTTP API is written down there
- ``specs``     fetch a task's spec from its URI and check its hash
- ``result``    shares, manifest checks and EIP-712 signing of the group's result (pure)
- ``peers``     HTTP calls to group members: manifest, signature, artifact download
- ``daemon``    the event-driven loop (indexer events → policy → claim with intent records
                → group formed), periodic reconciliation
- ``settle``    after training: publish/sign/submit, finalize, withdraw (each tx once)
- ``jobspec``   TaskSpec → training config and search limits (pure)
- ``job``       :class:`JobSupervisor`: starts, resumes and publishes training jobs when a
                group forms; serves the job's gradient-exchange URL
- ``jobrunner`` the training subprocess (``python -m miner.daemon.jobrunner DIR``): key on
                stdin, training with gradient exchange, the leader's search and export
- ``runtime``   wiring from settings: account, chain connection, HTTP server, daemon
- ``crashpoints`` named SIGKILL points for the chaos tests (``MANTA_CRASH_AT``); a no-op
                unless an entry point armed one
- ``cli``       the ``manta-miner`` sub-commands (``init``, ``register``, ``status``,
                ``withdraw``, ``run``) as a Typer app

Nothing here imports ``client``; nothing runs at import.
"""
