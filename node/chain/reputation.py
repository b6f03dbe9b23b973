"""A miner's reputation, weighed from what the chain says about the tasks it claimed.

The contract keeps no counters (they cost gas on every settlement and anyone could inflate
them with 1-wei tasks posted to themselves). Instead the record is derived from each claimed
task's final state: a task counts only if its reward reaches ``min_reward_wei``, and the
record says how much value a miner was paid and by how many distinct clients, so a reader
can tell a hundred tasks from one client from a hundred clients. The minimum applies to the
miner's own share, so a 32-slot task just above it does not count as 32 worthy tasks.

- *completed*: settled in the miners' favour with this miner among the signers;
- *disputes lost*: settled for the client with this miner among the signers;
- *failed*: expired without a result while this miner stayed silent (a member that checked in
  kept its bond: the contract does not blame it, and neither does the record).
"""

from __future__ import annotations

from collections.abc import Iterable

from node.chain.models import Reputation, TaskState, TaskView


def weigh_reputation(outcomes: Iterable[tuple[int, TaskView]], min_reward_wei: int = 0
                     ) -> Reputation:
    """The record of one miner from ``(its slot, the task's view)`` per claimed task."""
    completed = failed = lost = earned = 0
    clients: set[str] = set()
    for slot, view in outcomes:
        if view.claimed == 0 or view.share_wei(slot) < min_reward_wei:
            continue
        if view.state is TaskState.EXPIRED:
            failed += 0 if view.present(slot) else 1
        elif view.state is TaskState.SETTLED and view.signed(slot):
            if view.miners_paid:
                completed += 1
                earned += view.share_wei(slot)
                clients.add(view.client)
            else:
                lost += 1
    return Reputation(completed=completed, failed=failed, disputes_lost=lost,
                      earned_wei=earned, distinct_clients=len(clients))
