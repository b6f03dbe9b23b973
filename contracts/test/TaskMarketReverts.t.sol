// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {FeeOnTransferToken} from "./utils/Mocks.sol";
import {TaskMarket} from "../src/TaskMarket.sol";

/// @notice Every custom error (but TaskMarketTooManyTokens, which needs 65,535 tokens), raised by
/// the call that should raise it, and nothing changes.
contract TaskMarketRevertsTest is MarketFixture {
    function _expectWrongState(uint256 taskId, TaskMarket.State state) internal {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongState.selector, taskId, state));
    }

    function test_unknownTask() public {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 0));
        market.getTask(0);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 1));
        market.stateOf(1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 5));
        vm.prank(miners[0]);
        market.claim(5, new address[](0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 3));
        market.expire(3, new address[](0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketUnknownTask.selector, 99));
        market.checkIn(99, new address[](0), EVIDENCE);
    }

    function test_wrongState() public {
        uint256 taskId = _running(address(0), 1);
        address[] memory group = groupOf[taskId];
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(miners[1]);
        market.claim{value: BOND}(taskId, group);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(client);
        market.accept(taskId, group);
        _expectWrongState(taskId, TaskMarket.State.Running);
        market.finalize(taskId, group);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(client);
        market.cancel(taskId);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(arbiter);
        market.resolve(taskId, true, group);
        _expectWrongState(taskId, TaskMarket.State.Running);
        vm.prank(miners[0]);
        market.endorse(taskId, group);

        _submitAll(taskId);
        _expectWrongState(taskId, TaskMarket.State.Submitted);
        market.expire(taskId, group);
        _accept(taskId);
        _expectWrongState(taskId, TaskMarket.State.Settled);
        vm.prank(client);
        market.accept(taskId, group);
        // everyone signed: nothing is left to claim late
        _expectWrongState(taskId, TaskMarket.State.Settled);
        vm.prank(miners[0]);
        market.checkIn(taskId, group, EVIDENCE);
        bytes[] memory sigs = _signatures(taskId, ROOT, 0);
        _expectWrongState(taskId, TaskMarket.State.Settled);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
    }

    function test_wrongState_submitBeforeGroupStarts_andCheckInWhileOpen() public {
        uint256 taskId = _postNative(2);
        _claim(taskId, miners[0]);
        bytes[] memory sigs = _signatures(taskId, ROOT, 0);
        address[] memory group = groupOf[taskId];
        _expectWrongState(taskId, TaskMarket.State.Open);
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
        _expectWrongState(taskId, TaskMarket.State.Open);
        vm.prank(miners[0]);
        market.checkIn(taskId, group, EVIDENCE);
    }

    function test_notClient_notArbiter() public {
        uint256 taskId = _submitted(address(0), 1);
        address[] memory group = groupOf[taskId];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotClient.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.accept(taskId, group);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotClient.selector, taskId, arbiter));
        vm.prank(arbiter);
        market.dispute(taskId, bytes32(0));
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotArbiter.selector, taskId, client));
        vm.prank(client);
        market.resolve(taskId, false, group);
        uint256 open = _postNative(1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotClient.selector, open, stranger));
        vm.prank(stranger);
        market.cancel(open);
    }

    function test_deadlinePassed() public {
        uint256 open = _postNative(1);
        uint64 claimDeadline = market.getTask(open).claimDeadline;
        vm.warp(claimDeadline + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, open, claimDeadline));
        vm.prank(miners[0]);
        market.claim{value: BOND}(open, new address[](0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, open, claimDeadline));
        vm.prank(client);
        market.cancel(open);

        uint256 taskId = _running(address(0), 1);
        address[] memory group = groupOf[taskId];
        uint64 workDeadline = market.getTask(taskId).workDeadline;
        vm.warp(workDeadline + 1);
        bytes[] memory sigs = _signatures(taskId, ROOT, 0);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, taskId, workDeadline));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, taskId, workDeadline));
        vm.prank(miners[0]);
        market.checkIn(taskId, group, EVIDENCE);

        uint256 submitted = _submitted(address(0), 1);
        uint64 review = market.getTask(submitted).settleDeadline;
        vm.warp(review + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, submitted, review));
        vm.prank(client);
        market.dispute(submitted, bytes32(0));

        uint256 disputed = _submitted(address(0), 1);
        vm.prank(client);
        market.dispute(disputed, bytes32(0));
        uint64 arbitration = market.getTask(disputed).settleDeadline;
        vm.warp(arbitration + 1);
        address[] memory dgroup = groupOf[disputed];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, disputed, arbitration));
        vm.prank(arbiter);
        market.resolve(disputed, true, dgroup);
    }

    function test_deadlineNotReached() public {
        uint256 open = _postNative(1);
        uint64 claimDeadline = market.getTask(open).claimDeadline;
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlineNotReached.selector, open, claimDeadline));
        market.expire(open, new address[](0));
        uint256 taskId = _running(address(0), 1);
        address[] memory group = groupOf[taskId];
        uint64 workDeadline = market.getTask(taskId).workDeadline;
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlineNotReached.selector, taskId, workDeadline));
        market.expire(taskId, group);
        _submitAll(taskId);
        uint64 review = market.getTask(taskId).settleDeadline;
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlineNotReached.selector, taskId, review));
        market.finalize(taskId, group);
        // a sweep waits for the settle deadline, so a member left out can still answer
        uint256 partialTask = _running(address(0), 3);
        _submitBy(partialTask, 0, 2);
        _accept(partialTask);
        uint64 settle = market.getTask(partialTask).settleDeadline;
        address[] memory pgroup = groupOf[partialTask];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlineNotReached.selector, partialTask, settle));
        market.sweep(partialTask, pgroup);
    }

    function test_wrongPayment() public {
        TaskMarket.TaskParams memory p = _params(address(0), REWARD, BOND, 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, REWARD, REWARD - 1));
        vm.prank(client);
        market.postTask{value: REWARD - 1}(p, "");
        p = _params(address(mtt), REWARD, BOND, 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, 0, 1));
        vm.prank(client);
        market.postTask{value: 1}(p, "");
        uint256 taskId = _postNative(1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, BOND, 0));
        vm.prank(miners[0]);
        market.claim(taskId, new address[](0));
        uint256 tokenTask = _post(_params(address(mtt), REWARD, BOND, 1));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongPayment.selector, 0, BOND));
        vm.prank(miners[0]);
        market.claim{value: BOND}(tokenTask, new address[](0));
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

    function test_alreadyClaimed_partyCannotClaim_claimsExist() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        address[] memory group = groupOf[taskId];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketAlreadyClaimed.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.claim{value: BOND}(taskId, group);
        vm.deal(arbiter, 10 ether);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketPartyCannotClaim.selector, taskId, client));
        vm.prank(client);
        market.claim{value: BOND}(taskId, group);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketPartyCannotClaim.selector, taskId, arbiter));
        vm.prank(arbiter);
        market.claim{value: BOND}(taskId, group);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketClaimsExist.selector, taskId, 1));
        vm.prank(client);
        market.cancel(taskId);
    }

    function test_wrongGroup_staleOrForgedLists() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        // stale: the list before the last claim (a duplicate could hide behind it)
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongGroup.selector, taskId, 0));
        vm.prank(miners[0]);
        market.claim{value: BOND}(taskId, new address[](0));
        _claim(taskId, miners[1]);
        _claim(taskId, miners[2]);
        address[] memory forged = new address[](3);
        forged[0] = miners[1];
        forged[1] = miners[0];
        forged[2] = miners[2];
        bytes[] memory sigs = new bytes[](3);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongGroup.selector, taskId, 3));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", forged, sigs);
        forged[1] = stranger; // a stranger listing itself to be paid
        vm.warp(_now() + WORK_WINDOW + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketWrongGroup.selector, taskId, 3));
        market.expire(taskId, forged);
    }

    function test_lengthMismatch_noQuorum_badSignature_zeroRoot() public {
        uint256 taskId = _running(address(0), 3);
        address[] memory group = groupOf[taskId];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketLengthMismatch.selector, taskId, 3, 2));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, new bytes[](2));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNoQuorum.selector, taskId, 1, 2));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, new bytes[](3));
        // a signature over another root, or by another key, is refused (not skipped)
        bytes[] memory sigs = _signatures(taskId, keccak256("other"), 2);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadSignature.selector, taskId, 1));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
        sigs = new bytes[](3);
        sigs[1] = _sign(keyOf[miners[2]], market.resultDigest(taskId, ROOT));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadSignature.selector, taskId, 1));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
        sigs[1] = hex"0102";
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadSignature.selector, taskId, 1));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
        bytes[] memory zeroSigs = _signatures(taskId, bytes32(0), 2);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketZeroResultRoot.selector, taskId));
        vm.prank(miners[0]);
        market.submitResult(taskId, bytes32(0), "", group, zeroSigs);
        // a stranger cannot submit, even with a majority of the members' signatures
        sigs = _signatures(taskId, ROOT, 7);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotMember.selector, taskId, stranger));
        vm.prank(stranger);
        market.submitResult(taskId, ROOT, "", group, sigs);
        assertEq(uint256(market.stateOf(taskId)), uint256(TaskMarket.State.Running), "unchanged");
    }

    function test_nothingToWithdraw_nothingToSweep() public {
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNothingToWithdraw.selector, client, address(0)));
        vm.prank(client);
        market.withdraw(address(0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNothingToWithdraw.selector, client, address(mtt)));
        vm.prank(client);
        market.withdraw(address(mtt));
        uint256 taskId = _submitted(address(0), 2);
        _accept(taskId);
        address[] memory group = groupOf[taskId];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNothingToSweep.selector, taskId));
        market.sweep(taskId, group); // everyone signed
        uint256 partialTask = _running(address(0), 3);
        _submitBy(partialTask, 0, 2);
        _accept(partialTask);
        vm.warp(_now() + REVIEW_WINDOW + 1);
        address[] memory pgroup = groupOf[partialTask];
        market.sweep(partialTask, pgroup);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNothingToSweep.selector, partialTask));
        market.sweep(partialTask, pgroup); // once
    }

    function test_checkIn_endorse_refusals() public {
        uint256 taskId = _running(address(0), 3);
        address[] memory group = groupOf[taskId];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNoEvidence.selector, taskId));
        vm.prank(miners[1]);
        market.checkIn(taskId, group, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotMember.selector, taskId, stranger));
        vm.prank(stranger);
        market.checkIn(taskId, group, EVIDENCE);
        _checkIn(taskId, miners[1]);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketAlreadyCheckedIn.selector, taskId, miners[1]));
        vm.prank(miners[1]);
        market.checkIn(taskId, group, EVIDENCE);
        _submitBy(taskId, 0, 3);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketAlreadySigned.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.endorse(taskId, group);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketAlreadyCheckedIn.selector, taskId, miners[0]));
        vm.prank(miners[0]);
        market.checkIn(taskId, group, EVIDENCE); // a signer has nothing to check in for
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNotMember.selector, taskId, stranger));
        vm.prank(stranger);
        market.endorse(taskId, group);
        uint64 settle = market.getTask(taskId).settleDeadline;
        vm.warp(settle + 1);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketDeadlinePassed.selector, taskId, settle));
        vm.prank(miners[2]);
        market.endorse(taskId, group);
    }

    function test_invalidParams() public {
        TaskMarket.TaskParams memory p = _params(address(0), 0, 1 ether, 1);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidReward.selector, 0));
        p = _params(address(0), 1 ether, 1 ether, 0);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidSlots.selector, 0));
        p.slots = 33;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidSlots.selector, 33));
        string[4] memory names = ["claimWindow", "workWindow", "reviewWindow", "arbitrationWindow"];
        uint32[4] memory maxima = [
            market.MAX_CLAIM_WINDOW(),
            market.MAX_WORK_WINDOW(),
            market.MAX_REVIEW_WINDOW(),
            market.MAX_ARBITRATION_WINDOW()
        ];
        for (uint256 w; w < 4; ++w) {
            for (uint256 bad; bad < 2; ++bad) {
                uint32 value = bad == 0 ? 0 : maxima[w] + 1;
                p = _params(address(0), 1 ether, 1 ether, 1);
                if (w == 0) p.claimWindow = value;
                if (w == 1) p.workWindow = value;
                if (w == 2) p.reviewWindow = value;
                if (w == 3) p.arbitrationWindow = value;
                _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidWindow.selector, names[w], value));
            }
        }
        p = _params(address(0), 1 ether, 0, 1);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketBondTooLow.selector, 0, 0.01 ether));
        p = _params(address(0), 100 ether, 0.25 ether - 1, 4); // floor: 100 / (100 * 4)
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketBondTooLow.selector, 0.25 ether - 1, 0.25 ether));
        p = _params(address(0), 1 ether, 1 ether, 1);
        p.arbiter = address(0);
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidArbiter.selector, address(0)));
        p.arbiter = client;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketInvalidArbiter.selector, client));
        assertEq(market.taskCount(), 0, "nothing posted");
        vm.warp(uint256(type(uint32).max) - 1 days);
        p = _params(address(0), 1 ether, 1 ether, 1);
        uint256 latest = block.timestamp + CLAIM_WINDOW + WORK_WINDOW + REVIEW_WINDOW + ARBITRATION_WINDOW;
        _expectPostRevert(p, abi.encodeWithSelector(TaskMarket.TaskMarketBeyondTimeHorizon.selector, latest));
    }

    function _expectPostRevert(TaskMarket.TaskParams memory p, bytes memory err) internal {
        vm.expectRevert(err);
        vm.prank(client);
        market.postTask{value: p.reward}(p, "");
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
