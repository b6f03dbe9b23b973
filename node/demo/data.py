"""The demo client's task and data: the spec it posts (:func:`demo_spec`) and its split of
the built-in set into a training part served by URL and a held-out part it verifies on
(:func:`split_client_data`); for the stereo flavour, the stereo spec
(:func:`stereo_demo_spec`) and the client's own procedural pairs (:func:`stereo_client_pairs`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.demo.processes import DemoError, run_json, tool

logger = logging.getLogger(__name__)

HELD_OUT_FOLDS, HELD_OUT_FOLD = 5, 4  # the client keeps a fifth of the set for itself


def demo_spec(quick: bool, max_flops: int,
              dataset: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The task the demo's client posts (scheme 1: the same 4 sub-networks on every miner).

    ``dataset`` is the spec's dataset reference (the demo passes ``{url, sha256}`` of its
    training part); None names the built-in set.
    """
    # digits trains on 1,437 images: more epochs cost seconds and bring the chosen network
    # near its plateau, where its accuracy on the held-out part matches the miners' claim
    phases: list[dict[str, Any]] = [{"name": "full", "epochs": 8 if quick else 1, "lr": 0.05},
                                    {"name": "kernel", "epochs": 2 if quick else 1, "lr": 0.02,
                                     "subnets_per_step": 4}]
    if not quick:
        phases.append({"name": "depth", "epochs": 1, "lr": 0.02, "subnets_per_step": 4})
    return {
        "kind": "classification", "seed": 7,
        "dataset": dict(dataset) if dataset is not None else
        {"name": "digits" if quick else "animal-mnist"},
        "search_space": {"kernel_sizes": [3, 5], "expand_ratios": [3.0, 4.0],
                         "depths": [1, 2], "resolutions": [20, 24, 28]},
        "training": {"batch_size": 64, "phases": phases},
        "distributed": {"scheme": "data_parallel", "subnets_per_step": 4},
        "constraint": {"max_flops": max_flops},
    }


#: The stereo demo's supernet and its FLOPs limit, about halfway between the cheapest and
#: the largest sub-network of :func:`stereo_demo_spec`'s space (14.0M..27.8M MACs at 32 px,
#: 31.6M..62.5M at 48 px): the search has to give something up.
STEREO_SUPERNET = "ofa_dispnetc_micro"
STEREO_MAX_FLOPS = {True: 21_000_000, False: 47_000_000}
#: The client's own stereo pairs use this seed offset from the task's: scenes the miners,
#: who render the task's seed, never see.
STEREO_HELD_OUT_SEED_OFFSET = 1_000


def stereo_demo_spec(quick: bool, max_flops: int) -> dict[str, Any]:
    """The stereo task the demo's client posts: ``ofa_dispnetc_micro`` on the built-in
    procedural pairs (the miners render them from the spec's seed), 2 miners in data
    parallel with the same 4 sub-networks per step, EPE as the objective."""
    phases: list[dict[str, Any]] = [
        {"name": "full", "epochs": 3 if quick else 6, "lr": 0.003},
        {"name": "kernel", "epochs": 1 if quick else 2, "lr": 0.002, "subnets_per_step": 4}]
    return {
        "kind": "stereo", "objective": "min_epe", "seed": 7,
        "dataset": {"name": "procedural-stereo"},
        "search_space": {"kernel_sizes": [3, 5], "expand_ratios": [2.0, 4.0],
                         "depths": [1, 2], "resolutions": [32 if quick else 48]},
        "training": {"supernet": STEREO_SUPERNET, "batch_size": 32, "distill_weight": 0.0,
                     "phases": phases},
        "distributed": {"scheme": "data_parallel", "subnets_per_step": 4},
        "constraint": {"max_flops": max_flops},
    }


async def stereo_client_pairs(spec: Mapping[str, Any], pairs: int, folder: Path) -> Path:
    """Render the client's held-out stereo pairs (``manta-miner automl export-dataset
    procedural-stereo``, as a process) sized like the spec's scenes but from another seed."""
    out = folder / "held-out-stereo.npz"
    seed = int(spec["seed"]) + STEREO_HELD_OUT_SEED_OFFSET
    await run_json([*tool("manta-miner"), "automl", "export-dataset", "procedural-stereo",
                    str(out), "--pairs", str(pairs), "--seed", str(seed),
                    "--supernet", str(spec["training"]["supernet"]),
                    "--resolution", str(max(spec["search_space"]["resolutions"])), "--json"])
    logger.info("client stereo pairs rendered pairs=%d seed=%d", pairs, seed)
    return out


@dataclass(frozen=True)
class ClientData:
    """The client's split of the built-in set: a training part the miners download by URL
    (pinned by its sha256) and a held-out part only ``manta task verify`` reads.

    The held-out part is the images ``i`` (in the set's stored order) with
    ``i % HELD_OUT_FOLDS == HELD_OUT_FOLD``, the training part all the others: disjoint by
    construction, and interleaved because animal-mnist is stored sorted by class.
    """

    train_file: Path
    sha256: str
    eval_file: Path
    train_images: int
    eval_images: int


async def split_client_data(quick: bool, folder: Path) -> ClientData:
    """Export the built-in set's two parts (``manta-miner automl export-dataset``, run as a
    process: node imports no miner code) and pack the training part (``manta data pack``)
    into ``folder/serve/``, the folder the demo's data server publishes."""
    name = "digits" if quick else "animal-mnist"
    raw, eval_file = folder / "train-raw.npz", folder / "held-out.npz"
    export = [*tool("manta-miner"), "automl", "export-dataset", name, "--folds",
              str(HELD_OUT_FOLDS), "--fold", str(HELD_OUT_FOLD), "--json"]
    train, evaluation = await asyncio.gather(run_json([*export, str(raw), "--rest"]),
                                             run_json([*export, str(eval_file)]))
    (serve := folder / "serve").mkdir(parents=True, exist_ok=True)
    packed = await run_json([*tool("manta"), "data", "pack", str(raw), "--out",
                             str(serve / "train.npz"), "--json"])
    raw.unlink()
    if train["images"] + evaluation["images"] != train["total"]:
        raise DemoError(f"the parts do not split the set: {train} {evaluation}")
    logger.info("client data split train=%d held_out=%d sha256=%s", train["images"],
                evaluation["images"], packed["sha256"])
    return ClientData(serve / "train.npz", str(packed["sha256"]), eval_file,
                      int(train["images"]), int(evaluation["images"]))
