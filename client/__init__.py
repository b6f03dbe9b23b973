"""The client: the ``manta`` CLI and the API behind it. Imports ``node``, never ``miner``.

Modules (pure ones first, I/O at the edges):

- ``errors``    the ``ClientError`` subtree (``BadAmount``, ``WrongTaskState``,
                ``NoMemberReachable``, ``OutputExists``, ``VerifyError``…)
- ``units``     ``0.5eth`` / ``500gwei`` / ``12wei`` → int wei; ``30m`` → seconds (exact)
- ``models``    what the API returns (``TaskInfo``, ``SubmitOutcome``, ``TxOutcome``,
                ``FetchOutcome``, ``VerifyReport``, ``WatchUpdate``…)
- ``specs``     read and validate SPEC.toml, publish its canonical JSON to the spec store
- ``verify``    re-check a fetched result (root, sha256s, params from the safetensors
                header, FLOPs/params claims) and, with ``--data``, its accuracy
- ``evaluate``  accuracy of a ``torch.export`` program (``model.pt2``) on the client's
                .npz (torch imported lazily)
- ``datasets``  ``data pack``: image-folder tree / x.npy+y.npy / .npz → packed .npz + sha256
- ``session``   ``ClientConfig`` (from ``node.config`` settings) and ``connect`` (deployment,
                RPC pool, keystore unlocked only to send)
- ``transfer``  HTTP to the group's miners: hash-checked manifest and artifact downloads
                with fall-back to the next member, SSE progress streams
- ``api``       one async function per command: submit, status, list, accept, dispute,
                cancel, expire, withdraw, fetch, verify
- ``watch``     live progress (members' SSE streams) plus chain events until settled
- ``serve``     ``data serve``: a read-only HTTP server for specs and packed datasets
- ``render``    the rich render layer (the only terminal output)
- ``cli``       the Typer app (``manta``), one error handler, exit codes 0/1/2
"""
