// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {MarketHandler} from "./utils/MarketHandler.sol";
import {TaskMarket} from "../src/TaskMarket.sol";
import {MantaTestToken} from "../src/MantaTestToken.sol";

/// @notice Forge calls random sequences of MarketHandler actions (every lifecycle step, a
/// whole lifecycle, the reverse attack, hostile actors, time passing; fail_on_revert is on, so
/// every action must succeed) and checks after every call:
/// - money is conserved, per token: the market holds exactly what live tasks escrow, what
///   settled tasks still hold for members left out, every credit and the burn; and per task:
///   what the actors gained plus what the task still holds plus what it burned is zero;
/// - an honest member that followed the protocol never ends below its bond: once a task is
///   final for it, it got back exactly its bond, plus its share when it signed a result the
///   miners won; before, it has at most its bond at stake;
/// - the client side (client and puppets) never gains from a task, the arbiters never gain;
/// - terminal states stay terminal; claimed <= slots; members are distinct and their hash
///   chain is the contract's group.
/// afterInvariant logs the successes per action, makes any action the random sequence did not
/// reach succeed once (so every run proves every state is reachable from where it ended), and
/// checks the properties again.
contract TaskMarketInvariantTest is Test {
    TaskMarket internal market;
    MantaTestToken internal mtt;
    MarketHandler internal handler;
    /// @dev Retired (final) tasks whose state is re-read after each call; every one of them is
    /// re-read at the end of each run.
    uint256 internal constant RETIRED_SAMPLE = 4;

    function setUp() public {
        vm.warp(1_700_000_000);
        market = new TaskMarket();
        mtt = new MantaTestToken();
        handler = new MarketHandler(market, mtt);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](16);
        selectors[0] = MarketHandler.post.selector;
        selectors[1] = MarketHandler.claim.selector;
        selectors[2] = MarketHandler.submit.selector;
        selectors[3] = MarketHandler.submitHostile.selector;
        selectors[4] = MarketHandler.accept.selector;
        selectors[5] = MarketHandler.dispute.selector;
        selectors[6] = MarketHandler.resolve.selector;
        selectors[7] = MarketHandler.finalize.selector;
        selectors[8] = MarketHandler.expire.selector;
        selectors[9] = MarketHandler.cancel.selector;
        selectors[10] = MarketHandler.checkIn.selector;
        selectors[11] = MarketHandler.sweep.selector;
        selectors[12] = MarketHandler.warp.selector;
        selectors[13] = MarketHandler.lifecycle.selector;
        selectors[14] = MarketHandler.takeover.selector;
        selectors[15] = MarketHandler.attack.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// @dev One campaign checks every property after every call.
    function invariant_market() public view {
        _check();
    }

    /// @dev Checks every live task in full (a task stays live until the call after the one that
    /// made it final: its final ledger is checked once, then frozen), and that a rotating sample
    /// of the retired tasks stayed terminal.
    function _check() internal view {
        uint256[2] memory held;
        uint256[2] memory burned;
        MarketHandler.Ledger[] memory ls = handler.ledgers();
        for (uint256 k; k < ls.length; ++k) {
            MarketHandler.Ledger memory l = ls[k];
            TaskMarket.TaskView memory t = market.getTask(l.taskId);
            assertEq(t.token, l.token, "token");
            uint256 h = _held(t);
            uint256 ti = t.token == address(0) ? 0 : 1;
            held[ti] += h;
            burned[ti] += l.burned;
            assertEq(l.flow + int256(h) + int256(l.burned), 0, "per task: paid out + held + burned == paid in");
            assertEq(l.arbiterNet, 0, "the honest arbiter gains nothing");
            assertEq(l.colluderNet, 0, "the colluding arbiter gains nothing");
            assertTrue(l.clientSide <= 0, "the client side never gains from a task");
            _structure(t, l);
            for (uint256 i; i < l.group.length; ++i) {
                if (l.honestMember[i]) _honest(t, l, i);
            }
        }
        (uint256[] memory ids, TaskMarket.State[] memory states) = handler.retiredSample(RETIRED_SAMPLE);
        for (uint256 k; k < ids.length; ++k) {
            assertEq(uint256(market.stateOf(ids[k])), uint256(states[k]), "a terminal state changed");
        }
        _conservation(address(0), held[0], burned[0]);
        _conservation(address(mtt), held[1], burned[1]);
    }

    /// @dev What a task still holds: everything while it is live; after a settlement that left
    /// members out and before the sweep, their unendorsed shares (miners won) and the bonds of
    /// those that neither signed nor checked in; nothing once it is closed.
    function _held(TaskMarket.TaskView memory t) internal pure returns (uint256 held) {
        TaskMarket.State s = t.state;
        if (s == TaskMarket.State.Cancelled || s == TaskMarket.State.Expired) return 0;
        if (s != TaskMarket.State.Settled) return uint256(t.reward) + uint256(t.bond) * t.claimed;
        if (t.closed) return 0;
        uint256 n = t.claimed;
        for (uint256 i; i < n; ++i) {
            uint256 bit = uint256(1) << i;
            if (t.signedSlots & bit != 0) continue;
            if (t.minersPaid) held += _share(t.reward, n, i);
            if (t.presentSlots & bit == 0) held += t.bond;
        }
    }

    function _share(uint256 reward, uint256 n, uint256 slot) internal pure returns (uint256 share) {
        share = reward / n;
        if (slot == 0) share += reward - share * n;
    }

    /// @dev Per token: the market holds exactly the live tasks' escrows and held amounts, the
    /// credits and the burn; and the burn is what the tasks burned.
    function _conservation(address token, uint256 held, uint256 burnedByLive) internal view {
        (uint256 burnedByRetired, uint256 credits) = handler.books(token);
        uint256 burned = market.burnedOf(token);
        assertEq(burnedByLive + burnedByRetired, burned, "the burn is the sum of the tasks' burns");
        uint256 balance = token == address(0) ? address(market).balance : mtt.balanceOf(address(market));
        assertEq(balance, held + credits + burned, "market balance == escrows + held + credits + burned");
    }

    /// @dev Member `i` of the task is honest: final for it (expired, or settled and it signed,
    /// checked in, or the task closed), it got exactly its bond back and its share when it
    /// signed a result the miners won; before, only its bond is at stake.
    function _honest(TaskMarket.TaskView memory t, MarketHandler.Ledger memory l, uint256 i) internal pure {
        uint256 bit = uint256(1) << i;
        bool signed = t.signedSlots & bit != 0;
        bool present = t.presentSlots & bit != 0;
        bool settled = t.state == TaskMarket.State.Settled;
        bool final_ = t.state == TaskMarket.State.Expired || (settled && (signed || present || t.closed));
        if (final_) {
            int256 owed = settled && t.minersPaid && signed ? int256(_share(t.reward, t.claimed, i)) : int256(0);
            assertEq(l.memberNet[i], owed, "an honest member ends with its bond (and its share when it signed)");
        } else {
            assertTrue(l.memberNet[i] >= -int256(uint256(t.bond)), "an honest member risks at most its bond");
        }
    }

    function _structure(TaskMarket.TaskView memory t, MarketHandler.Ledger memory l) internal pure {
        assertLe(t.claimed, t.slots, "claimed <= slots");
        assertEq(l.group.length, t.claimed, "every claim recorded");
        bytes32 chain;
        for (uint256 i; i < l.group.length; ++i) {
            chain = keccak256(abi.encodePacked(chain, l.group[i]));
            for (uint256 j = i + 1; j < l.group.length; ++j) {
                assertTrue(l.group[i] != l.group[j], "members are distinct");
            }
        }
        assertEq(chain, t.group, "the hash chain is the group");
        bool terminal = t.state == TaskMarket.State.Settled || t.state == TaskMarket.State.Cancelled
            || t.state == TaskMarket.State.Expired;
        assertEq(terminal, l.terminal, "the handler saw every terminal state");
        if (l.terminal) assertEq(uint256(t.state), uint256(l.terminalState), "a terminal state changed");
    }

    /// @dev After each run: log the successes per action (this run, and the campaign so far:
    /// the totals of the last log are the campaign's), make any action the run did not reach
    /// succeed once, and check everything again.
    function afterInvariant() public {
        uint256 actions = handler.ACTIONS();
        uint256 total;
        uint256 forced;
        // forge may call this hook twice for one run: count each run once
        uint256 fingerprint = uint256(keccak256(abi.encode(block.timestamp, handler.taskCount(), handler.calls())));
        bool counted = vm.envOr("MANTA_INVARIANT_LAST_RUN", uint256(0)) == fingerprint;
        vm.setEnv("MANTA_INVARIANT_LAST_RUN", vm.toString(fingerprint));
        _log("run: handler calls", handler.calls());
        for (uint256 a; a < actions; ++a) {
            uint256 count = handler.successes(a);
            total += count;
            string memory key = string.concat("MANTA_INVARIANT_SUCCESSES_", vm.toString(a));
            uint256 campaign = vm.envOr(key, uint256(0)) + (counted ? 0 : count);
            vm.setEnv(key, vm.toString(campaign));
            _log(string.concat("campaign successes: ", handler.actionName(a)), campaign);
        }
        uint256 runs = vm.envOr("MANTA_INVARIANT_RUNS", uint256(0)) + (counted ? 0 : 1);
        vm.setEnv("MANTA_INVARIANT_RUNS", vm.toString(runs));
        _log("campaign runs", runs);
        _log("run: action successes", total);
        handler.setForcing(true);
        for (uint256 a; a < actions; ++a) {
            if (handler.successes(a) == 0) {
                handler.force(a, uint256(keccak256(abi.encode(a, total))));
                ++forced;
            }
        }
        handler.setForcing(false);
        uint256 forcedTotal = vm.envOr("MANTA_INVARIANT_FORCED", uint256(0)) + (counted ? 0 : forced);
        vm.setEnv("MANTA_INVARIANT_FORCED", vm.toString(forcedTotal));
        _log("campaign actions forced (not reached by the random sequence)", forcedTotal);
        _log("run: tasks", handler.taskCount());
        _log("run: tasks retired (final)", handler.retiredCount());
        for (uint256 a; a < actions; ++a) {
            assertLe(1, handler.successes(a), string.concat("never succeeded: ", handler.actionName(a)));
        }
        _check();
        (uint256[] memory ids, TaskMarket.State[] memory states) = handler.retiredSample(handler.retiredCount());
        for (uint256 k; k < ids.length; ++k) {
            assertEq(uint256(market.stateOf(ids[k])), uint256(states[k]), "a terminal state changed");
        }
        // the credits the handler books are the contract's
        uint256 actors = handler.actorCount();
        for (uint256 token; token < 2; ++token) {
            address tk = token == 0 ? address(0) : address(mtt);
            uint256 credits;
            for (uint256 i; i < actors; ++i) {
                credits += market.creditOf(handler.actors(i), tk);
            }
            (, uint256 booked) = handler.books(tk);
            assertEq(credits, booked, "credits booked");
        }
    }
}
