"""Gradient averaging inside a rig (torch.distributed) and between miners (the transport).

Modules, from the pure core outwards:

- ``averaging``      the masked-mean rule (an element used by m of n contributors is averaged
                     over those m; used by none: no update) and why DDP's sum / world size is
                     wrong for per-node sub-networks
- ``layout``         :class:`FlatLayout`: the used elements of many parameters packed into one
                     flat float32 buffer (subnet-aware exchange: only those travel)
- ``optim_guard``    :func:`keep_unused`: an optimizer step that leaves untrained elements and
                     their momentum / Adam state exactly as they were
- ``robust``         non-finite rejection, a bound against the lower-median size (also at two
                     peers), clipping to the median size, centered clipping
- ``compression``    float32 / bf16 / blockwise int8 codecs and error feedback
- ``frames``         the wire format of gradient parts, results, declarations and verdicts
- ``pieces``         how a round cuts the buffer into shards and pipelined pieces, and how a
                     peer assembles the results (pure)
- ``channel``        :class:`PeerChannel`, the abstract async peer link, an in-memory hub,
                     and the :class:`Mailbox` with its per-sender budgets
- ``audit``          never trusting a reducer: each piece's verifier, the verifier's checks, how
                     a peer settles a piece, local result checks, disputes, evidence (pure)
- ``reduction``      a round's plan (pieces, each shard's verifier), a peer's encoded parts,
                     and the deterministic reduction of a piece's rows (pure)
- ``round_run``      one round as a peer runs it: parts to owner and verifier, owner's
                     declaration, verifier's verdict, results collected
- ``exchange``       :class:`GradientExchange`: reduce-scatter + all-gather between miners with
                     per-round deadlines, verification, drops, caught members and a round
                     report each
- ``reports``        :class:`RoundReport` and the per-peer participation tally (reward shares)
- ``tcp_channel``    a plain-TCP :class:`PeerChannel` (tests, benches, trusted LANs)
- ``transport_channel``  the :class:`PeerChannel` over ``node.transport`` (authenticated, AEAD)
- ``bridge``         runs the async exchange from the synchronous training loop
- ``config``         :class:`WorkerEnv`: a worker's ranks, read from the launcher's variables
- ``launch``         a torchrun-style launcher (N local workers, failures stop everyone)
- ``rig``            :class:`RigGroup`: the in-rig process group (Gloo on CPU, NCCL on CUDA)
- ``averager``       :class:`GradientAverager`: the once-per-step training hook, both schemes
- ``trainer_hook``   :class:`TrainerHook`: the averager as ``miner.automl.train``'s
                     ``GradientHook``, guarding the trainer's optimizer step

Protocols other parts plug into (kept small on purpose):

- the trainer calls ``averager(step, params, archs)`` once per step after accumulating its K
  sub-networks' gradients, then ``averager.step(optimizer, params)`` instead of
  ``optimizer.step()``;
- ``used_masks(archs) -> [bool mask | None per parameter]`` says which elements a set of
  archs touches; :func:`averager.supernet_masks` builds it from
  ``OFASupernet.parameter_masks``;
- :class:`channel.PeerChannel`: ``me``, ``await send(peer, round_id, tag, payload)``,
  ``await recv(peer, round_id, tag)`` (the caller bounds the wait), ``release(round_id)``.
"""
