"""The claim policy: one row per reason to refuse, and the cases that claim."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from miner.daemon.policy import (
    compute_units,
    cost_floors,
    decide,
    estimated_time_s,
    infeasible,
    memory_gib,
    precheck,
)
from miner.daemon.settings import CapacitySettings, PolicySettings
from node.chain.models import TaskPosted
from node.documents.spec import Constraint, DatasetRef, SearchSpaceSpec, TaskSpec, TrainingBudget

NOW = 1_000_000
TOKEN = "0x" + "11" * 20
ARBITER = "0x" + "bb" * 20
CLIENTS_ARBITER = "0x" + "cc" * 20


def trusting(**policy: Any) -> PolicySettings:
    """Policy settings that trust the tasks' usual arbiter (the operator's allowlist)."""
    return PolicySettings(**{"arbiters": (ARBITER,), **policy})


def make_spec(**changes: Any) -> TaskSpec:
    base: dict[str, Any] = {
        "kind": "classification", "dataset": DatasetRef(name="digits"),
        "search_space": SearchSpaceSpec(resolutions=(32,)),
        "training": TrainingBudget(batch_size=32), "constraint": Constraint(max_flops=10**6),
    }
    base.update(changes)
    return TaskSpec(**base)


SPEC = make_spec()


def make_stereo_spec(**changes: Any) -> TaskSpec:
    base: dict[str, Any] = {
        "kind": "stereo", "objective": "min_epe", "dataset": DatasetRef(name="procedural-stereo"),
        "search_space": SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(2.0, 4.0),
                                        depths=(1, 2), resolutions=(32,)),
        "training": TrainingBudget(supernet="ofa_dispnetc_micro", batch_size=16),
        "constraint": Constraint(max_flops=10**7),
    }
    base.update(changes)
    return TaskSpec(**base)


STEREO = make_stereo_spec()


def make_task(spec: TaskSpec = SPEC, **changes: Any) -> TaskPosted:
    fields: dict[str, Any] = {
        "block_number": 5, "block_hash": b"\x01" * 32, "tx_hash": b"\x02" * 32, "log_index": 0,
        "task_id": 1, "client": "0x" + "aa" * 20, "token": "0x" + "00" * 20,
        "reward_wei": 10**18, "bond_wei": 10**16, "slots": 1, "claim_deadline": NOW + 600,
        "work_window_s": 3600, "review_window_s": 600, "arbitration_window_s": 600,
        "arbiter": ARBITER, "spec_hash": spec.spec_hash(),
        "validation_hash": b"\x03" * 32, "spec_uri": "http://client/spec.json",
    }
    fields.update(changes)
    return TaskPosted(**fields)


@dataclass
class Case:
    name: str
    claim: bool
    reason: str
    task: dict[str, Any] = field(default_factory=dict)
    spec: TaskSpec | None = SPEC
    spec_error: str | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    active: int = 0
    floors: dict[str, float] | None = None


CASES = [
    Case("claims a fitting task", True, "claim"),
    Case("too many active tasks", False, "too_many_active_tasks", active=1),
    Case("more slots of concurrency", True, "claim", active=1,
         capacity={"max_concurrent_tasks": 2}),
    Case("claim window over", False, "claim_window_over", task={"claim_deadline": NOW + 2}),
    Case("token not accepted", False, "token_not_accepted", policy={"tokens": (TOKEN,)}),
    Case("accepted token", True, "claim", task={"token": TOKEN}, policy={"tokens": (TOKEN,)}),
    Case("bond too high", False, "bond_too_high", policy={"max_bond_wei": 10**15}),
    # The market terms that protect the bond (issue: a client-picked arbiter takes every bond).
    Case("the client's own arbiter", False, "arbiter_not_trusted",
         task={"arbiter": CLIENTS_ARBITER}),
    Case("no allowlist trusts nobody", False, "arbiter_not_trusted: 0x", policy={"arbiters": ()}),
    Case("an arbiter on the allowlist among others", True, "claim",
         task={"arbiter": CLIENTS_ARBITER}, policy={"arbiters": (TOKEN, CLIENTS_ARBITER)}),
    Case("review window too short to answer a result that leaves us out", False,
         "review_window_too_short", task={"review_window_s": 59}),
    Case("bonds out of proportion to the reward", False, "bond_out_of_proportion",
         task={"bond_wei": 10**18, "slots": 2}),
    Case("spec unreachable", False, "spec_unusable: connection refused", spec=None,
         spec_error="connection refused"),
    Case("dataset hash mismatch", False, "spec_unusable: dataset hash mismatch", spec=None,
         spec_error="dataset hash mismatch"),
    Case("spec hash mismatch", False, "spec_hash_mismatch",
         task={"spec_hash": b"\x09" * 32}),
    Case("unknown kind", False, "kind_not_served", policy={"kinds": ("stereo",)}),
    Case("memory beyond capacity", False, "memory_beyond_capacity",
         capacity={"memory_gib": 0.5}),
    Case("reward too low", False, "reward_too_low",
         policy={"min_reward_wei_per_unit": 10**19}),
    Case("deadline unreachable", False, "deadline_unreachable",
         capacity={"units_per_hour": 1.0}, task={"work_window_s": 60}),
    Case("deadline fits without margin", True, "claim",
         capacity={"units_per_hour": 36.0}, task={"work_window_s": 50},
         policy={"time_margin": 1.0}),
    Case("deadline misses with margin", False, "deadline_unreachable",
         capacity={"units_per_hour": 36.0}, task={"work_window_s": 50},
         policy={"time_margin": 2.0}),
    Case("max flops below the cheapest sub-network", False, "constraint_infeasible: max_flops",
         floors={"flops": 10**6 + 1, "params": 1.0}),
    Case("max flops at the cheapest sub-network", True, "claim",
         floors={"flops": 10**6, "params": 1.0}),
    Case("max params below the cheapest sub-network", False,
         "constraint_infeasible: max_params", spec=make_spec(constraint=Constraint(
             max_flops=10**6, max_params=100)), floors={"flops": 1.0, "params": 101.0}),
    Case("a latency limit this miner cannot check", False, "constraint_unsupported",
         spec=make_spec(constraint=Constraint(max_latency_ms=5.0, device_profile="pixel7"))),
    Case("a stereo task", True, "claim", spec=STEREO, policy={"kinds": ("stereo",)}),
    Case("a stereo task, stereo not served", False, "kind_not_served", spec=STEREO),
    Case("a stereo task on a classification dataset", False, "spec_untrainable",
         spec=make_stereo_spec(dataset=DatasetRef(name="digits")),
         policy={"kinds": ("stereo",)}),
    Case("a classification task on stereo pairs", False, "spec_untrainable",
         spec=make_spec(dataset=DatasetRef(name="procedural-stereo"))),
    Case("a stereo max flops below the cheapest sub-network", False,
         "constraint_infeasible: max_flops", spec=STEREO, policy={"kinds": ("stereo",)},
         floors={"flops": 10**7 + 1, "params": 1.0}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    task = make_task(case.spec or SPEC, **case.task)
    decision = decide(task, case.spec, case.spec_error, trusting(**case.policy),
                      CapacitySettings(**case.capacity), case.active, NOW, case.floors)
    assert decision.claim is case.claim
    assert decision.reason.startswith(case.reason), decision.reason


def test_precheck_matches_decide_for_cheap_refusals() -> None:
    task = make_task(claim_deadline=NOW)
    early = precheck(task, trusting(), CapacitySettings(), 0, NOW)
    assert early is not None and early.reason.startswith("claim_window_over")
    assert precheck(make_task(), trusting(), CapacitySettings(), 0, NOW) is None
    untrusted = precheck(make_task(arbiter=CLIENTS_ARBITER), trusting(), CapacitySettings(), 0,
                         NOW)
    assert untrusted is not None and untrusted.reason.startswith("arbiter_not_trusted")


def test_estimates_scale_with_the_budget() -> None:
    small = make_spec()
    big = make_spec(search_space=SearchSpaceSpec(resolutions=(64,)),
                    training=TrainingBudget(batch_size=128))
    # 4 phases x 1 epoch x 4 sub-networks, scaled by (32/224)^2
    assert compute_units(small) == pytest.approx(16.0 * (32 / 224) ** 2)
    assert compute_units(big) == pytest.approx(compute_units(small) * 4)
    assert memory_gib(big) > memory_gib(small)
    assert estimated_time_s(60.0, CapacitySettings(units_per_hour=60.0)) == 3600.0


def test_cost_floors_are_the_smallest_sub_network_of_the_space() -> None:
    from miner.automl.efficiency import count_flops, count_params
    from miner.automl.registry import supernet_config
    from miner.daemon.jobspec import supernet_overrides

    spec = make_spec(search_space=SearchSpaceSpec(kernel_sizes=(3, 5), expand_ratios=(3.0, 4.0),
                                                  depths=(1, 2), resolutions=(20, 24)))
    floors = cost_floors(spec)
    config = supernet_config(spec.training.supernet, **supernet_overrides(spec))
    smallest = config.space.min_arch()  # every cost here grows with k, e, depth, resolution
    assert floors == {"flops": count_flops(config, smallest),
                      "params": count_params(config, smallest)}
    assert cost_floors(make_spec())["flops"] > floors["flops"]  # a larger space costs more
    assert infeasible(make_spec(constraint=Constraint(max_flops=int(floors["flops"]) - 1)),
                      floors) is not None
    assert infeasible(make_spec(constraint=Constraint(max_flops=int(floors["flops"]))),
                      floors) is None


def test_cost_floors_of_an_unknown_supernet_is_a_named_error() -> None:
    from miner.automl.errors import UnknownSupernetError

    with pytest.raises(UnknownSupernetError):
        cost_floors(make_spec(training=TrainingBudget(supernet="ofa_nope")))


def test_stereo_cost_floors_are_the_smallest_stereo_sub_network() -> None:
    from miner.automl.efficiency import count_flops, count_params
    from miner.automl.registry import supernet_config
    from miner.daemon.jobspec import supernet_overrides

    floors = cost_floors(STEREO)
    config = supernet_config("ofa_dispnetc_micro", **supernet_overrides(STEREO))
    smallest = config.space.min_arch()
    assert floors == {"flops": count_flops(config, smallest),
                      "params": count_params(config, smallest)}
    below = make_stereo_spec(constraint=Constraint(max_flops=int(floors["flops"]) - 1))
    verdict = decide(make_task(below), below, None, trusting(kinds=("stereo",)),
                     CapacitySettings(), 0, NOW, cost_floors(below))
    assert not verdict.claim and verdict.reason.startswith("constraint_infeasible: max_flops")


@pytest.mark.parametrize("spec", [
    make_stereo_spec(training=TrainingBudget(supernet="ofa_mbv3_tiny")),
    make_spec(training=TrainingBudget(supernet="ofa_dispnetc_micro")),
], ids=["stereo-task-classification-net", "classification-task-stereo-net"])
def test_cost_floors_refuse_a_supernet_of_the_other_kind(spec: TaskSpec) -> None:
    from miner.automl.errors import AutoMLError

    with pytest.raises(AutoMLError):
        cost_floors(spec)
