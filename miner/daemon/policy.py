"""The claim policy: whether this miner should claim a posted task, and why (pure).

:func:`decide` looks only at its arguments: the ``TaskPosted`` event, the spec fetched for
it (or the reason it could not be fetched or checked), the rig's capacity and policy, the
number of tasks already active, and the time. It never raises on bad input; every refusal
carries a short reason the daemon logs (``reason=spec_hash_mismatch …``).

Estimates (documented, deliberately simple; the operator calibrates ``units_per_hour``):

- *compute units* = Σ over phases of ``epochs × subnets_per_step`` × (max resolution/224)²
  × (max expand ratio/6) × (max depth/4): one unit is one epoch of one sampled
  sub-network at resolution 224 of the reference space;
- *time* = units / ``units_per_hour`` (× ``time_margin`` when compared with the window);
- *memory* = 0.5 GiB + batch × (max resolution/224)² × 0.03 GiB (activations of a
  mobile supernet at its largest setting, plus weights and workspace).

The same estimates serve both task kinds (a stereo space's resolution is its image height);
``units_per_hour`` is the operator's calibration either way.

Feasibility is exact, not estimated: :func:`cost_floors` gives the cost of the cheapest
sub-network of the spec's search space under the training engine's own cost model (the
additive FLOPs and parameter tables the search uses, for the classification or the stereo
supernet the spec names), and a constraint below it can never be met: claiming would only
forfeit the bond. A latency limit is refused too (this miner's job runner has no device
latency tables), and so is a spec the job runner cannot train (a stereo task on a dataset
that is not a stereo one, or the other way round).

The market terms are checked before anything is fetched: the task's arbiter must be on the
operator's allowlist (``policy.arbiters``; a client's own arbiter could rule every bond
away), its review window long enough for the daemon to endorse or check in when a result
leaves it out (``policy.min_review_window_s``), and the bonds in proportion to the reward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from miner.daemon import jobspec
from miner.daemon.settings import CapacitySettings, PolicySettings
from node.chain.models import ZERO_ADDRESS, TaskPosted
from node.documents.spec import TaskSpec
from node.errors import ConfigError

REFERENCE_RESOLUTION = 224
REFERENCE_EXPAND = 6.0
REFERENCE_DEPTH = 4
BASE_MEMORY_GIB = 0.5
MEMORY_GIB_PER_SAMPLE = 0.03


@dataclass(frozen=True)
class Decision:
    """The verdict; ``reason`` is a short snake_case code, then details after a colon."""

    claim: bool
    reason: str
    compute_units: float = 0.0
    estimated_time_s: float = 0.0


def compute_units(spec: TaskSpec) -> float:
    """Estimated compute of training ``spec``, in units (see the module docstring)."""
    space = spec.search_space
    scale = (max(space.resolutions) / REFERENCE_RESOLUTION) ** 2
    scale *= max(space.expand_ratios) / REFERENCE_EXPAND
    scale *= max(space.depths) / REFERENCE_DEPTH
    samples = sum(p.epochs * p.subnets_per_step for p in spec.training.phases)
    return samples * scale


def memory_gib(spec: TaskSpec) -> float:
    """Estimated accelerator (or host) memory for one training replica, in GiB."""
    resolution = max(spec.search_space.resolutions) / REFERENCE_RESOLUTION
    return BASE_MEMORY_GIB + spec.training.batch_size * resolution**2 * MEMORY_GIB_PER_SAMPLE


def estimated_time_s(units: float, capacity: CapacitySettings) -> float:
    """Wall time of ``units`` on this rig (``units_per_hour`` is the measured rate)."""
    return units / capacity.units_per_hour * 3600.0


def warm_up() -> None:
    """Import the AutoML engine (torch, about a second or more) ahead of the first
    :func:`cost_floors`, so that the first claim decision does not pay for it: at one-second
    blocks that import alone would cost the claim a block."""
    import miner.automl.efficiency
    import miner.automl.registry
    import miner.automl.search  # noqa: F401


def cost_floors(spec: TaskSpec) -> dict[str, float]:
    """The cheapest sub-network of ``spec``'s search space per limited cost: ``flops``
    (multiply-accumulates) and ``params``, exact, from the engine's additive cost tables.

    Imports the AutoML engine (torch) on first use, so the daemon calls it off its event
    loop. An unknown supernet, a space it cannot take, or a supernet of another task kind
    than the spec's raises :class:`~miner.automl.errors.AutoMLError`.
    """
    from miner.automl.efficiency import flops_table, params_table
    from miner.automl.errors import AutoMLError
    from miner.automl.registry import supernet_config
    from miner.automl.search import cheapest
    from miner.automl.stereo.supernet import StereoConfig

    name = spec.training.supernet
    config = supernet_config(name, **jobspec.supernet_overrides(spec))
    kind = "stereo" if isinstance(config, StereoConfig) else "classification"
    if kind != spec.kind:
        raise AutoMLError(f"supernet {name!r} is a {kind} supernet, the task is {spec.kind}")
    return {"flops": cheapest(flops_table(config))[0],
            "params": cheapest(params_table(config))[0]}


def infeasible(spec: TaskSpec, floors: Mapping[str, float] | None) -> str | None:
    """Why ``spec``'s constraint cannot be met by any sub-network, or None.

    ``floors`` is :func:`cost_floors` of the spec (None: not computed, only the latency
    check applies).
    """
    constraint = spec.constraint
    if constraint.max_latency_ms is not None:
        return (f"constraint_unsupported: max_latency_ms on {constraint.device_profile!r} "
                "needs a latency table this miner does not have")
    for name, limit in (("flops", constraint.max_flops), ("params", constraint.max_params)):
        floor = (floors or {}).get(name)
        if limit is not None and floor is not None and floor > limit:
            return (f"constraint_infeasible: max_{name} {limit} is below the cheapest "
                    f"sub-network of the search space ({floor:.0f})")
    return None


def _refuse(reason: str, units: float = 0.0, time_s: float = 0.0) -> Decision:
    return Decision(False, reason, units, time_s)


def _check_event(
    task: TaskPosted, policy: PolicySettings, capacity: CapacitySettings,
    active_tasks: int, now: int,
) -> Decision | None:
    """Refusals that need no spec (cheap, checked before anything is fetched)."""
    if active_tasks >= capacity.max_concurrent_tasks:
        return _refuse(f"too_many_active_tasks: {active_tasks} of {capacity.max_concurrent_tasks}")
    if task.claim_deadline - now < policy.min_claim_time_left_s:
        return _refuse(f"claim_window_over: deadline {task.claim_deadline}, now {now}")
    accepted = {t.lower() for t in policy.tokens}
    if accepted and task.token.lower() not in accepted:
        token = "native" if task.token == ZERO_ADDRESS else task.token
        return _refuse(f"token_not_accepted: {token}")
    if policy.max_bond_wei is not None and task.bond_wei > policy.max_bond_wei:
        return _refuse(f"bond_too_high: {task.bond_wei} > {policy.max_bond_wei} wei")
    return _check_terms(task, policy)


def _check_terms(task: TaskPosted, policy: PolicySettings) -> Decision | None:
    """The market terms that protect this miner's bond from the other parties: an arbiter it
    trusts, a review window long enough to answer a result it was left out of, and a bond in
    proportion to its share."""
    trusted = {a.lower() for a in policy.arbiters}
    if task.arbiter.lower() not in trusted:
        why = "no arbiter allowlist configured (policy.arbiters)" if not trusted \
            else "not in policy.arbiters"
        return _refuse(f"arbiter_not_trusted: {task.arbiter} ({why})")
    if task.review_window_s < policy.min_review_window_s:
        return _refuse(f"review_window_too_short: {task.review_window_s} s < "
                       f"{policy.min_review_window_s} s")
    if task.bond_wei * task.slots > task.reward_wei * policy.max_bond_share:
        return _refuse(f"bond_out_of_proportion: {task.slots} x {task.bond_wei} wei > "
                       f"{policy.max_bond_share} x reward {task.reward_wei} wei")
    return None


def precheck(
    task: TaskPosted, policy: PolicySettings, capacity: CapacitySettings,
    active_tasks: int, now: int,
) -> Decision | None:
    """The refusal :func:`decide` would give before looking at a spec, or None.

    Lets the daemon skip fetching the spec of a task it would refuse anyway.
    """
    return _check_event(task, policy, capacity, active_tasks, now)


def decide(
    task: TaskPosted,
    spec: TaskSpec | None,
    spec_error: str | None,
    policy: PolicySettings,
    capacity: CapacitySettings,
    active_tasks: int,
    now: int,
    floors: Mapping[str, float] | None = None,
) -> Decision:
    """Claim ``task`` or not (see the module docstring for the estimates).

    ``spec`` is the spec fetched from ``task.spec_uri`` and hash-checked by the caller (and
    checked again here against ``task.spec_hash``); ``spec_error`` says why there is none
    (unreachable, spec hash mismatch, dataset hash mismatch…). ``now`` is chain time in s.
    ``floors`` is :func:`cost_floors` of ``spec``, computed by the caller off its event loop.
    """
    early = _check_event(task, policy, capacity, active_tasks, now)
    if early is not None:
        return early
    if spec is None:
        return _refuse(f"spec_unusable: {spec_error or 'no spec'}")
    actual = spec.spec_hash().lower().removeprefix("0x")
    if actual != task.spec_hash.hex():
        return _refuse(f"spec_hash_mismatch: chain 0x{task.spec_hash.hex()}, spec 0x{actual}")
    if spec.kind not in policy.kinds:
        return _refuse(f"kind_not_served: {spec.kind} (serving {', '.join(policy.kinds)})")
    try:
        jobspec.check_trainable(spec)
    except ConfigError as exc:
        return _refuse(f"spec_untrainable: {exc}")
    problem = infeasible(spec, floors)
    if problem is not None:
        return _refuse(problem)
    units = compute_units(spec)
    time_s = estimated_time_s(units, capacity)
    need_gib = memory_gib(spec)
    if need_gib > capacity.memory_gib:
        return _refuse(
            f"memory_beyond_capacity: needs {need_gib:.1f} GiB, have {capacity.memory_gib:.1f}",
            units, time_s,
        )
    floor_wei = math.ceil(units * policy.min_reward_wei_per_unit)
    if task.reward_wei < floor_wei:
        return _refuse(
            f"reward_too_low: {task.reward_wei} wei < {floor_wei} wei for {units:.1f} units",
            units, time_s,
        )
    if time_s * policy.time_margin > task.work_window_s:
        return _refuse(
            f"deadline_unreachable: needs ~{time_s:.0f} s x{policy.time_margin}, "
            f"work window {task.work_window_s} s",
            units, time_s,
        )
    return Decision(True, f"claim: {units:.1f} units, ~{time_s:.0f} s", units, time_s)
