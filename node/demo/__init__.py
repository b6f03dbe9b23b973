"""The MANTA demo: the whole marketplace on one machine, or only its chain part.

``run_marketplace`` (``manta-node demo``) starts a devnet (anvil + contracts), two miner
daemons (``manta-miner run``, one torch thread each) that register on chain, and drives a
client through the ``manta`` CLI. The client splits the built-in set (animal-mnist, or
digits with ``--quick``) into two disjoint parts, packs the training part (``manta data
pack``), serves it on 127.0.0.1 (``manta data serve``) and submits a classification task
naming it by URL and sha256 (FLOPs limit, 2 slots, data parallel with 4 sub-networks per
step, reward and bonds); the miners download it, train, search, sign and submit; the
client fetches, verifies the hashes, evaluates on the held-out part (which the miners never
saw) and accepts, which pays the miners. Node imports neither miner nor client
code: both run as processes and meet the demo only on the chain and over HTTP. Keys stay
in the devnet's encrypted keystores; passwords travel as a file path.

Every process it starts runs in its own process group, gets ``PR_SET_PDEATHSIG`` and is
stopped (SIGTERM, then SIGKILL) on the way out, also on Ctrl-C or SIGTERM.

With ``--stereo`` the task is a stereo one: the miners train ``ofa_dispnetc_micro`` on the
built-in procedural scenes, which they render from the spec's seed (no file is served), and
the client renders its own pairs from another seed and checks the delivered network's
end-point error on them.

``run_lifecycle`` / ``run_demo`` (``manta-node demo --chain-only``) do the chain part only:
post, claim, sign, submit and accept (which pays) with no training.

Modules:

- :mod:`~node.demo.chain` — the chain-only lifecycle and its :class:`DemoSummary`;
- :mod:`~node.demo.processes` — starting daemons, the data server and the ``manta`` CLI
  as processes (also used by the end-to-end tests);
- :mod:`~node.demo.data` — the client's task spec and its split of the data;
- :mod:`~node.demo.summary` — what the full demo measures and reports;
- :mod:`~node.demo.market` — the full demo's stages.
"""

from node.demo.chain import DemoSummary, run_demo, run_lifecycle
from node.demo.data import ClientData, demo_spec, split_client_data, stereo_demo_spec
from node.demo.market import MarketDemoConfig, run_marketplace, until_signal
from node.demo.processes import DemoError
from node.demo.summary import MarketSummary, gas_by_call

__all__ = [
    "ClientData", "DemoError", "DemoSummary", "MarketDemoConfig", "MarketSummary", "demo_spec",
    "gas_by_call", "run_demo", "run_lifecycle", "run_marketplace", "split_client_data",
    "stereo_demo_spec", "until_signal",
]
