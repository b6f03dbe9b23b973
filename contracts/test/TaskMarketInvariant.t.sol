// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./utils/Test.sol";
import {MarketHandler} from "./utils/MarketHandler.sol";
import {TaskMarket} from "../src/TaskMarket.sol";
import {MantaTestToken} from "../src/MantaTestToken.sol";

/// @notice Forge calls random sequences of MarketHandler actions (posting, claiming, submitting,
/// settling, expiring, withdrawing, warping time, and wrong parties trying privileged calls)
/// and checks these properties after every call.
contract TaskMarketInvariantTest is Test {
    TaskMarket internal market;
    MantaTestToken internal mtt;
    MarketHandler internal handler;

    error ExitWorked();

    function setUp() public {
        vm.warp(1_700_000_000);
        market = new TaskMarket();
        mtt = new MantaTestToken();
        handler = new MarketHandler(market, mtt);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](13);
        selectors[0] = MarketHandler.post.selector;
        selectors[1] = MarketHandler.claim.selector;
        selectors[2] = MarketHandler.submit.selector;
        selectors[3] = MarketHandler.accept.selector;
        selectors[4] = MarketHandler.dispute.selector;
        selectors[5] = MarketHandler.resolve.selector;
        selectors[6] = MarketHandler.finalize.selector;
        selectors[7] = MarketHandler.expire.selector;
        selectors[8] = MarketHandler.cancel.selector;
        selectors[9] = MarketHandler.withdraw.selector;
        selectors[10] = MarketHandler.warp.selector;
        selectors[11] = MarketHandler.attack.selector;
        selectors[12] = MarketHandler.checkIn.selector;
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    /// @dev (a) The market holds, per token, exactly the open escrows, the bonds of unsettled
    /// tasks and everybody's credits.
    function invariant_balanceEqualsEscrowsBondsAndCredits() public view {
        _checkSolvency(address(0));
        _checkSolvency(address(mtt));
    }

    function _checkSolvency(address token) internal view {
        uint256 owed;
        uint256 n = handler.taskCount();
        for (uint256 i; i < n; ++i) {
            TaskMarket.TaskView memory t = market.getTask(handler.taskIds(i));
            if (t.token != token || _terminal(t.state)) continue;
            owed += uint256(t.reward) + uint256(t.bond) * t.claimed;
        }
        uint256 actors = handler.actorCount();
        for (uint256 i; i < actors; ++i) {
            owed += market.creditOf(handler.actors(i), token);
        }
        uint256 balance = token == address(0) ? address(market).balance : mtt.balanceOf(address(market));
        assertEq(balance, owed, "balance == escrows + bonds + credits");
    }

    /// @dev (b) Every task that is not settled, cancelled or expired can be closed by anyone once
    /// its current deadline has passed (probed in a call that is rolled back).
    function invariant_everyLiveTaskHasAnExitAfterItsDeadline() public {
        uint256 n = handler.taskCount();
        for (uint256 i; i < n; ++i) {
            uint256 taskId = handler.taskIds(i);
            if (_terminal(market.stateOf(taskId))) continue;
            try this.probeExit(taskId) {
                revert("probe returned without reverting");
            } catch (bytes memory reason) {
                assertEq(bytes4(reason), ExitWorked.selector, "exit after the deadline");
            }
        }
    }

    function probeExit(uint256 taskId) external {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        uint256 deadline;
        if (t.state == TaskMarket.State.Open) {
            deadline = t.claimed == 0 ? t.claimDeadline : uint256(t.claimDeadline) + t.workWindow;
        } else if (t.state == TaskMarket.State.Running) {
            deadline = t.workDeadline;
        } else {
            deadline = t.settleDeadline;
        }
        if (block.timestamp <= deadline) vm.warp(deadline + 1);
        vm.prank(address(0xBEEF));
        if (t.state == TaskMarket.State.Submitted || t.state == TaskMarket.State.Disputed) {
            market.finalize(taskId);
        } else {
            market.expire(taskId);
        }
        assertTrue(_terminal(market.stateOf(taskId)), "closed");
        revert ExitWorked();
    }

    /// @dev (c) Nobody but the rightful party moves value: wrong parties never succeed, and every
    /// credit equals what the handler's own model of the settlements says it should be.
    function invariant_onlyRightfulPartiesMoveValue() public view {
        assertEq(handler.unauthorizedSuccesses(), 0, "unauthorized call succeeded");
        uint256 actors = handler.actorCount();
        for (uint256 i; i < actors; ++i) {
            address account = handler.actors(i);
            assertEq(market.creditOf(account, address(0)), handler.expectedCredit(account, address(0)), "native");
            assertEq(market.creditOf(account, address(mtt)), handler.expectedCredit(account, address(mtt)), "MTT");
        }
    }

    function _terminal(TaskMarket.State state) internal pure returns (bool) {
        return state == TaskMarket.State.Settled || state == TaskMarket.State.Cancelled
            || state == TaskMarket.State.Expired;
    }
}
