"""The task training monitor: one web page, served by a miner and by ``manta task monitor``.

Modules:
- ``page``      the page and its assets (``static/``; ``static/vendor/`` holds uPlot, copied
                from ``node_modules`` by ``make setup``), served by :class:`MonitorPage`
- ``timeline``  a task's life on chain (events, block times, deadlines) as the page shows it
- ``sse``       the progress stream's wire format (one event; the phases that end a stream),
                written by the miner's server and by the client's monitor alike

Both servers answer the same HTTP API, so the page does not care who serves it:

``GET /`` (``?task=ID``) and ``GET /static/{path}``
    the page. ``503`` with the fix ("run make setup") while the chart library is missing.
``GET /tasks``
    ``{"tasks": [{"task_id", "phase", "role"}]}``: the tasks the server knows.
``GET /tasks/{id}/history``
    ``{"task_id", "members": [{"address", "slot", "phase", "updates", "snapshot",
    "error"}]}``: every progress update so far per reporting member (a miner reports
    itself; the client's monitor every member it reaches), so curves survive a reload.
``GET /tasks/{id}/events``
    Server-Sent Events: ``snapshot``, ``progress``, ``end`` as the miner's stream; an event
    may carry ``member`` (the aggregating client sets it), and ``resync`` (``{"member"}``)
    asks the page to fetch the history again (a member's stream was lost and is back).
``GET /tasks/{id}/timeline``
    :class:`~node.monitor.timeline.Timeline` as JSON.
``GET /tasks/{id}/manifest``
    the ResultManifest once it exists (``404`` before).
``GET /rig``
    ``{"hosts": [{"name", "cpu_percent", "cpus", "load_avg", "memory_total_bytes",
    "memory_available_bytes", "gpus": [...]}]}``.
"""
