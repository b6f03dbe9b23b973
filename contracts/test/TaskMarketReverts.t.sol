// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {FeeOnTransferToken, RejectingClient} from "./utils/Mocks.sol";
import {TaskMarket} from "../src/TaskMarket.sol";

/// @notice Every custom error, raised by the call that should raise it, and nothing changes.
contract TaskMarketRevertsTest is MarketFixture {
    function test_unknownTask() public {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 0));
        market.getTask(0);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 1));
        market.stateOf(1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 5));
        vm.prank(miners[0]);
        market.claim(5);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 3));
        market.expire(3);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 3));
        market.membersOf(3);
    }

    function test_wrongState() public {
        uint256 taskId = _running(address(0), 1);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(miners[1]);
        market.claim{value: 1 ether}(taskId);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(client);
        market.accept(taskId);
        _expectWrongState(taskId, TaskMarket.State.Running);
        market.finalize(taskId);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(client);
        market.cancel(taskId);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(arbiter);
        market.resolve(taskId, true);

        _submit(taskId, _equalShares(10 ether, 1));
        _expectWrongState(taskId, TaskMarket.State.Submitted);
        market.expire(taskId);
        vm.prank(client);
        market.accept(taskId);
        _expectWrongState(taskId, TaskMarket.State.Settled);
        vm.prank(client);
        market.accept(taskId);
        bytes[] memory sigs = _signatures(taskId, ROOT, _equalShares(10 ether, 1));
        _expectWrongState(taskId, TaskMarket.State.Settled);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", _equalShares(10 ether, 1), sigs);
    }

    function test_wrongState_submitBeforeGroupStarts() public {
        uint256 taskId = _postNative(2);
        _claim(taskId, miners[0]);
        uint96[] memory shares = _equalShares(10 ether, 1);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        _expectWrongState(taskId, TaskMarket.State.Open);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, sigs);
    }

    function _expectWrongState(uint256 taskId, TaskMarket.State state) internal {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongState.selector, taskId, state));
    }

    function test_notClient() public {
        uint256 taskId = _submitted(address(0), 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotClient.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.accept(taskId);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotClient.selector, taskId, arbiter));
        vm.prank(arbiter);
        market.dispute(taskId, bytes32(0));
        uint256 open = _postNative(1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotClient.selector, open, stranger));
        vm.prank(stranger);
        market.cancel(open);
    }

    function test_notLeader() public {
        uint256 taskId = _running(address(0), 2);
        uint96[] memory shares = _equalShares(10 ether, 2);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotLeader.selector, taskId, miners[1]));
        vm.prank(miners[1]);
        market.submitResult(taskId, ROOT, "", shares, sigs);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotLeader.selector, taskId, client));
        vm.prank(client);
        market.submitResult(taskId, ROOT, "", shares, sigs);
    }

    function test_notArbiter() public {
        uint256 taskId = _submitted(address(0), 1);
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotArbiter.selector, taskId, client));
        vm.prank(client);
        market.resolve(taskId, false);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotArbiter.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.resolve(taskId, true);
    }

    function test_deadlinePassed() public {
        uint256 claimDeadline = block.timestamp + CLAIM_WINDOW;
        uint256 open = _postNative(1);
        vm.warp(claimDeadline + 1);
        _expectPassed(open, claimDeadline);
        vm.prank(miners[0]);
        market.claim{value: 1 ether}(open);
        _expectPassed(open, claimDeadline);
        vm.prank(client);
        market.cancel(open);

        uint256 taskId = _running(address(0), 1);
        uint256 workDeadline = block.timestamp + WORK_WINDOW;
        vm.warp(workDeadline + 1);
        uint96[] memory shares = _equalShares(10 ether, 1);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        _expectPassed(taskId, workDeadline);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, sigs);

        taskId = _submitted(address(0), 1);
        uint256 reviewDeadline = block.timestamp + REVIEW_WINDOW;
        vm.warp(reviewDeadline + 1);
        _expectPassed(taskId, reviewDeadline);
        vm.prank(client);
        market.dispute(taskId, bytes32(0));

        taskId = _submitted(address(0), 1);
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        uint256 arbitrationDeadline = block.timestamp + ARBITRATION_WINDOW;
        vm.warp(arbitrationDeadline + 1);
        _expectPassed(taskId, arbitrationDeadline);
        vm.prank(arbiter);
        market.resolve(taskId, false);
    }

    function _expectPassed(uint256 taskId, uint256 deadline) internal {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, taskId, uint64(deadline)));
    }

    function test_deadlineNotReached() public {
        uint256 open = _postNative(1);
        vm.warp(block.timestamp + CLAIM_WINDOW);
        _expectNotReached(open, block.timestamp);
        market.expire(open);

        uint256 taskId = _running(address(0), 1);
        vm.warp(block.timestamp + WORK_WINDOW);
        _expectNotReached(taskId, block.timestamp);
        market.expire(taskId);

        taskId = _submitted(address(0), 1);
        uint256 reviewDeadline = block.timestamp + REVIEW_WINDOW;
        _expectNotReached(taskId, reviewDeadline);
        market.finalize(taskId);
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        vm.warp(block.timestamp + ARBITRATION_WINDOW);
        _expectNotReached(taskId, block.timestamp);
        market.finalize(taskId);
    }

    function _expectNotReached(uint256 taskId, uint256 deadline) internal {
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketDeadlineNotReached.selector, taskId, uint64(deadline))
        );
    }

    function test_wrongPayment() public {
        TaskMarket.TaskParams memory p = _params(address(0), 10 ether, 1 ether, 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, 10 ether, 9 ether));
        vm.prank(client);
        market.postTask{value: 9 ether}(p, "");
        p.token = address(mtt);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, 0, 1));
        vm.prank(client);
        market.postTask{value: 1}(p, "");

        uint256 taskId = _postNative(2);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, 1 ether, 0));
        vm.prank(miners[0]);
        market.claim(taskId);
        uint256 tokenTask = _postToken(2);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, 0, 1 ether));
        vm.prank(miners[0]);
        market.claim{value: 1 ether}(tokenTask);
    }

    function test_feeOnTransferToken_isRefused() public {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        fee.mint(client, 100 ether);
        vm.prank(client);
        fee.approve(address(market), type(uint256).max);
        TaskMarket.TaskParams memory p = _params(address(fee), 10 ether, 1 ether, 1);
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketFeeOnTransfer.selector, address(fee), 10 ether, 9.9 ether)
        );
        vm.prank(client);
        market.postTask(p, "");
        assertEq(market.taskCount(), 0, "nothing posted");
    }

    function test_nativeTransferFailed() public {
        RejectingClient rejecting = new RejectingClient();
        uint256 taskId = rejecting.post{value: 2 ether}(market, _params(address(0), 2 ether, 0, 1));
        rejecting.cancel(market, taskId);
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketNativeTransferFailed.selector, address(rejecting), 2 ether)
        );
        rejecting.withdraw(market);
        assertEq(market.creditOf(address(rejecting), address(0)), 2 ether, "credit kept for a later try");
    }

    function test_notRegistered() public {
        uint256 taskId = _postNative(1);
        vm.deal(stranger, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotRegistered.selector, stranger));
        vm.prank(stranger);
        market.claim{value: 1 ether}(taskId);
    }

    function test_alreadyClaimed() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        _claim(taskId, miners[1]);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketAlreadyClaimed.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.claim{value: 1 ether}(taskId);
    }

    function test_partyCannotClaim() public {
        uint256 taskId = _postNative(3);
        vm.prank(client);
        market.register("http://client.example");
        vm.prank(arbiter);
        market.register("http://arbiter.example");
        vm.deal(arbiter, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketPartyCannotClaim.selector, taskId, client));
        vm.prank(client);
        market.claim{value: 1 ether}(taskId);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketPartyCannotClaim.selector, taskId, arbiter));
        vm.prank(arbiter);
        market.claim{value: 1 ether}(taskId);
    }

    function test_claimsExist() public {
        uint256 taskId = _postNative(2);
        _claim(taskId, miners[0]);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketClaimsExist.selector, taskId, 1));
        vm.prank(client);
        market.cancel(taskId);
    }

    function test_lengthMismatch() public {
        uint256 taskId = _running(address(0), 2);
        uint96[] memory shares = _equalShares(10 ether, 2);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        uint96[] memory oneShare = _equalShares(10 ether, 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketLengthMismatch.selector, taskId, 2, 1, 2));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", oneShare, sigs);
        bytes[] memory oneSig = new bytes[](1);
        oneSig[0] = sigs[0];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketLengthMismatch.selector, taskId, 2, 2, 1));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, oneSig);
    }

    function test_badShares() public {
        uint256 taskId = _running(address(0), 2);
        uint96[] memory shares = _equalShares(10 ether, 2);
        shares[1] += 1;
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadShares.selector, taskId, 10 ether + 1, 10 ether));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, sigs);
    }

    function test_badSignature() public {
        uint256 taskId = _running(address(0), 3);
        uint96[] memory shares = _equalShares(10 ether, 3);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        bytes32 digest = market.resultDigest(taskId, ROOT, shares);

        bytes[] memory swapped = _copy(sigs);
        (swapped[1], swapped[2]) = (sigs[2], sigs[1]);
        _expectBadSignature(taskId, 1);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, swapped);

        bytes[] memory outsider = _copy(sigs);
        outsider[2] = _sign(keyOf[miners[5]], digest);
        _expectBadSignature(taskId, 2);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, outsider);

        bytes[] memory otherRoot = _signatures(taskId, keccak256("other"), shares);
        _expectBadSignature(taskId, 0);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, otherRoot);

        bytes[] memory malformed = _copy(sigs);
        malformed[0] = hex"1234";
        _expectBadSignature(taskId, 0);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, malformed);
    }

    function _copy(bytes[] memory sigs) internal pure returns (bytes[] memory out) {
        out = new bytes[](sigs.length);
        for (uint256 i; i < sigs.length; ++i) {
            out[i] = sigs[i];
        }
    }

    function _expectBadSignature(uint256 taskId, uint256 index) internal {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadSignature.selector, taskId, index));
    }

    function test_zeroResultRoot() public {
        uint256 taskId = _running(address(0), 1);
        uint96[] memory shares = _equalShares(10 ether, 1);
        bytes[] memory sigs = _signatures(taskId, bytes32(0), shares);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketZeroResultRoot.selector, taskId));
        vm.prank(miners[0]);
        market.submitResult(taskId, bytes32(0), "", shares, sigs);
    }

    function test_nothingToWithdraw() public {
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketNothingToWithdraw.selector, stranger, address(0))
        );
        vm.prank(stranger);
        market.withdraw(address(0));
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketNothingToWithdraw.selector, miners[0], address(mtt))
        );
        vm.prank(miners[0]);
        market.withdraw(address(mtt));
    }

    function test_invalidParams() public {
        TaskMarket.TaskParams memory p = _params(address(0), 0, 1 ether, 1);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidReward.selector, 0));
        p = _params(address(0), 1 ether, 1 ether, 0);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidSlots.selector, 0));
        p.slots = 33;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidSlots.selector, 33));
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.claimWindow = 0;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidWindow.selector, "claimWindow", 0));
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.workWindow = 0;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidWindow.selector, "workWindow", 0));
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.reviewWindow = 0;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidWindow.selector, "reviewWindow", 0));
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.arbitrationWindow = 0;
        _expectPostRevert(
            p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidWindow.selector, "arbitrationWindow", 0)
        );
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.arbiter = address(0);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidArbiter.selector, address(0)));
        p.arbiter = client;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidArbiter.selector, client));
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.workWindow = type(uint32).max;
        uint256 latest = block.timestamp + CLAIM_WINDOW + uint256(type(uint32).max) + REVIEW_WINDOW + ARBITRATION_WINDOW;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketBeyondTimeHorizon.selector, latest));
        assertEq(market.taskCount(), 0, "nothing posted");
    }

    function _expectPostRevert(TaskMarket.TaskParams memory p, bytes memory err) internal {
        vm.expectRevert(err);
        vm.prank(client);
        market.postTask{value: p.reward}(p, "");
    }

    function test_checkIn_refusals() public {
        uint256 open = _postNative(2);
        _claim(open, miners[0]);
        vm.prank(miners[0]);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongState.selector, open, TaskMarket.State.Open));
        market.checkIn(open);

        uint256 taskId = _running(address(0), 2);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotMember.selector, taskId, stranger));
        market.checkIn(taskId);
        vm.prank(miners[1]);
        market.checkIn(taskId);
        vm.prank(miners[1]);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketAlreadyCheckedIn.selector, taskId, miners[1]));
        market.checkIn(taskId);
        uint64 workDeadline = market.getTask(taskId).workDeadline;
        vm.warp(workDeadline + 1);
        vm.prank(miners[0]);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, taskId, workDeadline));
        market.checkIn(taskId);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 99));
        market.checkIn(99);
    }

    function test_invalidEndpoint() public {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketInvalidEndpoint.selector, 0));
        vm.prank(stranger);
        market.register("");
        bytes memory tooLong = new bytes(257);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketInvalidEndpoint.selector, 257));
        vm.prank(stranger);
        market.register(string(tooLong));
    }
}
