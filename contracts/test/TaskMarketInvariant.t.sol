// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {MarketHandler} from "./utils/MarketHandler.sol";
import {TaskMarket} from "../src/TaskMarket.sol";
import {MantaTestToken} from "../src/MantaTestToken.sol";

/// @notice Forge calls random sequences of MarketHandler actions (every lifecycle step, hostile
/// actors, time passing) and checks these properties after every call; `afterInvariant` checks
/// that every action succeeded often enough for the properties to mean something.
contract TaskMarketInvariantTest is Test {
    uint256 internal constant MIN_CALLS = 150;
    TaskMarket internal market;
    MantaTestToken internal mtt;
    MarketHandler internal handler;

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
        selectors[3] = MarketHandler.accept.selector;
        selectors[4] = MarketHandler.dispute.selector;
        selectors[5] = MarketHandler.resolve.selector;
        selectors[6] = MarketHandler.finalize.selector;
        selectors[7] = MarketHandler.expire.selector;
        selectors[8] = MarketHandler.cancel.selector;
        selectors[9] = MarketHandler.hostileCheckIn.selector;
        selectors[10] = MarketHandler.honestCheckIn.selector;
        selectors[11] = MarketHandler.sweep.selector;
        selectors[12] = MarketHandler.warp.selector;
        selectors[13] = MarketHandler.lifecycle.selector;
        selectors[14] = MarketHandler.attack.selector;
        selectors[15] = MarketHandler.hostileTakeover.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// @dev Every property after every call (one campaign, so the calls are not spent three
    /// times over): money is conserved, honest members never lose their bond, the structure holds.
    function invariant_market() public view {
        _moneyIsConserved();
        _honestMembersNeverLoseTheirBond();
        _structure();
    }

    /// @dev Money is conserved: per token, the market holds exactly what live tasks escrow,
    /// what settled tasks still hold for members left out, everybody's credits and the burn.
    function _moneyIsConserved() internal view {
        _checkConservation(address(0));
        _checkConservation(address(mtt));
    }

    function _checkConservation(address token) internal view {
        uint256 owed = market.burnedOf(token);
        uint256 n = handler.taskCount();
        for (uint256 k; k < n; ++k) {
            uint256 taskId = handler.taskIds(k);
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.token == token) owed += _held(t);
        }
        uint256 actors = handler.actorCount();
        for (uint256 i; i < actors; ++i) {
            owed += market.creditOf(handler.actors(i), token);
        }
        uint256 balance = token == address(0) ? address(market).balance : mtt.balanceOf(address(market));
        assertEq(balance, owed, "market balance == escrows + held + credits + burned");
    }

    /// @dev What a task still holds: everything while it runs; after a settlement that left
    /// members out and before the sweep, their unendorsed shares (miners won) and the bonds of
    /// those that neither signed nor checked in.
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

    /// @dev An honest member that followed the protocol never ends below what it started with:
    /// its wallet and credit, plus the bonds still in tasks not yet final for it.
    function _honestMembersNeverLoseTheirBond() internal view {
        uint256 m = handler.honestCount();
        for (uint256 h; h < m; ++h) {
            address who = handler.honest(h);
            _checkHonest(who, address(0));
            _checkHonest(who, address(mtt));
        }
    }

    function _checkHonest(address who, address token) internal view {
        uint256 worth = market.creditOf(who, token) + (token == address(0) ? who.balance : mtt.balanceOf(who));
        uint256 n = handler.taskCount();
        for (uint256 k; k < n; ++k) {
            uint256 taskId = handler.taskIds(k);
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.token != token) continue;
            address[] memory g = handler.groupOf(taskId);
            for (uint256 i; i < g.length; ++i) {
                if (g[i] != who) continue;
                uint256 bit = uint256(1) << i;
                bool settledForIt = t.state == TaskMarket.State.Settled
                    && (t.signedSlots & bit != 0 || t.presentSlots & bit != 0 || t.closed);
                bool final_ = t.state == TaskMarket.State.Expired || settledForIt;
                if (!final_) worth += t.bond;
            }
        }
        assertLe(1e30, worth, "an honest member lost money");
    }

    /// @dev Terminal states stay terminal (the latest retired tasks are re-read every call);
    /// claimed <= slots; members are distinct and the contract's hash chain is the handler's
    /// record of the claims.
    function _structure() internal view {
        uint256 done = handler.doneCount();
        for (uint256 k = done > 8 ? done - 8 : 0; k < done; ++k) {
            uint256 taskId = handler.doneIds(k);
            assertEq(uint256(market.stateOf(taskId)), uint256(handler.ghostState(taskId)), "a terminal state changed");
            assertEq(_held(market.getTask(taskId)), 0, "a final task holds nothing");
        }
        uint256 n = handler.taskCount();
        for (uint256 k; k < n; ++k) {
            uint256 taskId = handler.taskIds(k);
            TaskMarket.TaskView memory t = market.getTask(taskId);
            assertLe(t.claimed, t.slots, "claimed <= slots");
            address[] memory g = handler.groupOf(taskId);
            assertEq(g.length, t.claimed, "every claim recorded");
            assertEq(market.groupHash(g), t.group, "the hash chain is the group");
            for (uint256 i; i < g.length; ++i) {
                for (uint256 j = i + 1; j < g.length; ++j) {
                    assertTrue(g[i] != g[j], "members are distinct");
                }
            }
        }
    }

    /// @dev Every action succeeded in every run: the suite reaches every state. (Shrinking
    /// replays shorter sequences; the check applies to full-length runs.)
    function afterInvariant() public view {
        if (handler.calls() < MIN_CALLS) return;
        string[19] memory actions = [
            "post", "claim", "submit", "submit(excluding honest)", "accept", "dispute",
            "resolve(miners)", "resolve(client)", "finalize", "expire(open)", "expire(running)", "cancel",
            "checkIn(hostile)", "checkIn(honest)", "endorse", "sweep", "lifecycle", "attack", "takeover"
        ];
        for (uint256 i; i < actions.length; ++i) {
            uint256 count = handler.successes(keccak256(bytes(actions[i])));
            assertLe(1, count, string.concat("never succeeded: ", actions[i]));
        }
    }
}
