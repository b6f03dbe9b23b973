// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {TaskMarket} from "../src/TaskMarket.sol";
import {RejectingClient, ReenteringClient, RejectingMiner, HostileToken} from "./utils/Mocks.sol";

/// @notice Every path of the lifecycle, with the money checked to the wei.
contract TaskMarketLifecycleTest is MarketFixture {
    function test_register_setsAndReplacesEndpoint() public {
        vm.prank(miners[0]);
        market.register("http://new.example:9000");
        assertEq(keccak256(bytes(market.endpointOf(miners[0]))), keccak256("http://new.example:9000"), "endpoint");
        assertTrue(market.isRegistered(miners[0]), "registered");
        assertTrue(!market.isRegistered(stranger), "a stranger is not registered");
    }

    function test_postTask_native_escrowsAndRecords() public {
        uint256 before = address(market).balance;
        uint256 taskId = _postNative(2);
        assertEq(taskId, 1, "first id");
        assertEq(address(market).balance, before + REWARD, "escrow");
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(t.client, client, "client");
        assertEq(t.reward, REWARD, "reward");
        assertEq(t.bond, BOND, "bond");
        assertEq(uint256(t.slots), 2, "slots");
        assertEq(uint256(t.claimed), 0, "claimed");
        assertEq(uint256(t.state), uint256(TaskMarket.State.Open), "state");
        assertEq(uint256(t.claimDeadline), _now() + CLAIM_WINDOW, "claim deadline");
        assertEq(t.group, bytes32(0), "empty group");
    }

    function test_postTask_token_pullsReward() public {
        uint256 before = mtt.balanceOf(client);
        _post(_params(address(mtt), REWARD, BOND, 1));
        assertEq(mtt.balanceOf(client), before - REWARD, "pulled");
        assertEq(mtt.balanceOf(address(market)), REWARD, "escrowed");
    }

    function test_claim_fillsSlotsInOrder_keepsTheGroupAsAHashChain_andStarts() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        _claim(taskId, miners[1]);
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(uint256(t.state), uint256(TaskMarket.State.Open), "open until full");
        assertEq(t.group, market.groupHash(groupOf[taskId]), "hash chain");
        _claim(taskId, miners[2]);
        t = market.getTask(taskId);
        assertEq(uint256(t.state), uint256(TaskMarket.State.Running), "running");
        assertEq(uint256(t.workDeadline), _now() + WORK_WINDOW, "work deadline");
        assertEq(t.group, market.groupHash(groupOf[taskId]), "hash chain of three");
        assertEq(address(market).balance, REWARD + 3 * BOND, "reward and bonds held");
    }

    function test_claim_doesNotNeedRegistration() public {
        uint256 taskId = _postNative(1);
        vm.deal(stranger, 10 ether);
        _claim(taskId, stranger);
        assertEq(uint256(market.getTask(taskId).claimed), 1, "claimed");
    }

    function test_claimWindowEnd_startsPartialGroupImplicitly() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        vm.warp(_now() + CLAIM_WINDOW + 1);
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(uint256(t.state), uint256(TaskMarket.State.Running), "implicit start");
        assertEq(uint256(t.workDeadline), uint256(t.claimDeadline) + WORK_WINDOW, "implied deadline");
        _submitAll(taskId);
        assertEq(uint256(market.stateOf(taskId)), uint256(TaskMarket.State.Submitted), "submitted");
    }

    function test_submitResult_anyMemberWithAMajority_recordsRootAndReviewDeadline() public {
        uint256 taskId = _running(address(0), 3);
        _submitBy(taskId, 2, 1); // the last member sends, with member 0's signature: 2 of 3
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(uint256(t.state), uint256(TaskMarket.State.Submitted), "submitted");
        assertEq(t.resultRoot, ROOT, "root");
        assertEq(uint256(t.signedSlots), 5, "slots 0 and 2 signed");
        assertEq(uint256(t.settleDeadline), _now() + REVIEW_WINDOW, "review deadline");
    }

    function test_accept_paysEverySignerItsShareAndBond() public {
        uint256 taskId = _running(address(0), 3);
        uint256[] memory before = new uint256[](3);
        for (uint256 i; i < 3; ++i) {
            before[i] = miners[i].balance;
        }
        _submitAll(taskId);
        _accept(taskId);
        for (uint256 i; i < 3; ++i) {
            assertEq(miners[i].balance, before[i] + _share(REWARD, 3, i) + BOND, "share and bond pushed");
            assertEq(market.creditOf(miners[i], address(0)), 0, "nothing credited");
        }
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(uint256(t.state), uint256(TaskMarket.State.Settled), "settled");
        assertTrue(t.minersPaid, "miners paid");
        assertEq(address(market).balance, 0, "nothing left");
    }

    function test_accept_token_paysInTheToken() public {
        uint256 taskId = _running(address(mtt), 2);
        uint256 before0 = mtt.balanceOf(miners[0]);
        _submitAll(taskId);
        _accept(taskId);
        assertEq(mtt.balanceOf(miners[0]), before0 + _share(REWARD, 2, 0) + BOND, "token payout");
        assertEq(mtt.balanceOf(address(market)), 0, "nothing left");
    }

    function test_finalize_afterReviewWindow_paysMiners() public {
        uint256 taskId = _submitted(address(0), 2);
        vm.warp(_now() + REVIEW_WINDOW + 1);
        uint256 before = miners[1].balance;
        vm.prank(stranger);
        market.finalize(taskId, groupOf[taskId]);
        assertEq(miners[1].balance, before + _share(REWARD, 2, 1) + BOND, "paid by a stranger's finalize");
    }

    function test_dispute_thenArbiterSidesWithMiners() public {
        uint256 taskId = _submitted(address(0), 2);
        vm.prank(client);
        market.dispute(taskId, keccak256("reason"));
        assertEq(uint256(market.stateOf(taskId)), uint256(TaskMarket.State.Disputed), "disputed");
        uint256 before = miners[0].balance;
        vm.prank(arbiter);
        market.resolve(taskId, true, groupOf[taskId]);
        assertEq(miners[0].balance, before + _share(REWARD, 2, 0) + BOND, "paid");
        assertTrue(market.getTask(taskId).minersPaid, "miners won");
    }

    function test_dispute_thenArbiterSidesWithClient_refundsTheReward_burnsTheSignersBonds() public {
        uint256 taskId = _submitted(address(0), 2);
        vm.prank(client);
        market.dispute(taskId, keccak256("reason"));
        uint256 clientBefore = client.balance;
        uint256 arbiterBefore = arbiter.balance;
        vm.prank(arbiter);
        market.resolve(taskId, false, groupOf[taskId]);
        assertEq(client.balance, clientBefore + REWARD, "only the reward back");
        assertEq(arbiter.balance, arbiterBefore, "the arbiter gains nothing");
        assertEq(market.burnedOf(address(0)), 2 * BOND, "both signers' bonds burned");
        assertEq(market.creditOf(client, address(0)), 0, "no credit to the client");
        assertEq(address(market).balance, 2 * BOND, "the burn stays in the contract");
    }

    function test_finalize_silentArbiter_paysMiners() public {
        uint256 taskId = _submitted(address(0), 2);
        vm.prank(client);
        market.dispute(taskId, keccak256("reason"));
        vm.warp(_now() + ARBITRATION_WINDOW + 1);
        market.finalize(taskId, groupOf[taskId]);
        assertTrue(market.getTask(taskId).minersPaid, "miners paid");
    }

    function test_expire_openWithoutClaims_refundsClient() public {
        uint256 taskId = _postNative(2);
        vm.warp(_now() + CLAIM_WINDOW + 1);
        uint256 before = client.balance;
        market.expire(taskId, new address[](0));
        assertEq(client.balance, before + REWARD, "refund pushed");
        assertEq(uint256(market.stateOf(taskId)), uint256(TaskMarket.State.Expired), "expired");
    }

    function test_expire_runningWithoutResult_burnsTheSilentBonds_returnsTheCheckedIn() public {
        uint256 taskId = _running(address(0), 3);
        _checkIn(taskId, miners[1]);
        vm.warp(_now() + WORK_WINDOW + 1);
        uint256 clientBefore = client.balance;
        uint256 present = miners[1].balance;
        uint256 silent = miners[0].balance;
        market.expire(taskId, groupOf[taskId]);
        assertEq(client.balance, clientBefore + REWARD, "the reward, not the bonds");
        assertEq(miners[1].balance, present + BOND, "checked in: bond back");
        assertEq(miners[0].balance, silent, "silent: nothing back");
        assertEq(market.burnedOf(address(0)), 2 * BOND, "two silent bonds burned");
    }

    function test_expire_whenEveryMemberCheckedIn_returnsEveryBond() public {
        uint256 taskId = _running(address(0), 2);
        _checkIn(taskId, miners[0]);
        _checkIn(taskId, miners[1]);
        vm.warp(_now() + WORK_WINDOW + 1);
        uint256 clientBefore = client.balance;
        market.expire(taskId, groupOf[taskId]);
        assertEq(client.balance, clientBefore + REWARD, "the reward only");
        assertEq(market.burnedOf(address(0)), 0, "nothing burned");
        assertEq(address(market).balance, 0, "every bond returned");
    }

    function test_checkIn_ofTheLastOfThirtyTwoSlots() public {
        uint256 taskId = _running(address(0), 32);
        _checkIn(taskId, miners[31]);
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(uint256(t.presentSlots), uint256(1) << 31, "slot 31 present");
    }

    function test_expire_implicitlyStartedTask() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        vm.warp(_now() + CLAIM_WINDOW + WORK_WINDOW + 1);
        market.expire(taskId, groupOf[taskId]);
        assertEq(market.burnedOf(address(0)), BOND, "the silent member's bond");
    }

    function test_cancel_refundsClient() public {
        uint256 taskId = _postNative(2);
        uint256 before = client.balance;
        vm.prank(client);
        market.cancel(taskId);
        assertEq(client.balance, before + REWARD, "refund pushed");
    }

    function test_pushToARejectingReceiver_becomesACredit() public {
        RejectingClient rejecting = new RejectingClient();
        vm.deal(address(rejecting), 100 ether);
        uint256 taskId = rejecting.post{value: REWARD}(market, _params(address(0), REWARD, BOND, 1));
        rejecting.cancel(market, taskId);
        assertEq(market.creditOf(address(rejecting), address(0)), REWARD, "credited");
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketNativeTransferFailed.selector, address(rejecting), REWARD));
        rejecting.withdraw(market);
    }

    function test_aMemberThatRejectsPayment_doesNotBlockTheOthers() public {
        RejectingMiner bad = new RejectingMiner();
        vm.deal(address(bad), 10 ether);
        uint256 taskId = _postNative(2);
        _claim(taskId, miners[0]);
        bad.claim{value: BOND}(market, taskId, groupOf[taskId]);
        groupOf[taskId].push(address(bad));
        bad.submit(market, taskId, ROOT, groupOf[taskId], _signatures(taskId, ROOT, 1)); // it signs by sending
        uint256 before = miners[0].balance;
        _accept(taskId);
        assertEq(miners[0].balance, before + _share(REWARD, 2, 0) + BOND, "the other member is paid");
        assertEq(market.creditOf(address(bad), address(0)), _share(REWARD, 2, 1) + BOND, "credited");
        vm.expectRevert(abi.encodeWithSelector(
            TaskMarket.TaskMarketNativeTransferFailed.selector, address(bad), _share(REWARD, 2, 1) + BOND));
        bad.withdraw(market); // still refuses: the credit stays, nothing is lost
        assertEq(market.creditOf(address(bad), address(0)), _share(REWARD, 2, 1) + BOND, "kept");
    }

    function test_reentrantWithdraw_paysOnce() public {
        ReenteringClient reentering = new ReenteringClient();
        vm.deal(address(reentering), 100 ether);
        uint256 taskId = reentering.post{value: REWARD}(market, _params(address(0), REWARD, BOND, 1));
        uint256 before = address(reentering).balance;
        reentering.cancel(taskId); // the refund's push re-enters (or runs out of gas and credits)
        if (market.creditOf(address(reentering), address(0)) > 0) reentering.withdraw();
        assertTrue(reentering.reentryAttempts() >= 1, "it tried");
        assertTrue(!reentering.reentrySucceeded(), "the guard held");
        assertEq(address(reentering).balance, before + REWARD, "paid exactly once");
    }

    function test_fullGroupOf32_submitsAndSettles() public {
        uint256 taskId = _running(address(0), 32);
        _submitBy(taskId, 5, (uint256(1) << 17) - 1); // 17 of 32 sign: a strict majority
        _accept(taskId);
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(uint256(t.signedSlots), (uint256(1) << 17) - 1, "17 signers");
        vm.warp(_now() + REVIEW_WINDOW + 1);
        market.sweep(taskId, groupOf[taskId]);
        assertEq(market.burnedOf(address(0)), 15 * BOND, "15 silent bonds");
        assertEq(address(market).balance, 15 * BOND, "only the burn is left");
    }

    function test_resultDigest_isEip712() public view {
        bytes32 typeHash = keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
        bytes32 domain = keccak256(
            abi.encode(typeHash, keccak256("MANTA TaskMarket"), keccak256("2"), block.chainid, address(market))
        );
        bytes32 structHash = keccak256(abi.encode(market.RESULT_TYPEHASH(), uint256(7), ROOT));
        assertEq(market.resultDigest(7, ROOT), keccak256(abi.encodePacked("\x19\x01", domain, structHash)), "digest");
    }

    function _hostileToken() internal returns (HostileToken token) {
        token = new HostileToken();
        address[3] memory holders = [client, miners[0], miners[1]];
        for (uint256 i; i < 3; ++i) {
            token.mint(holders[i], 100 ether);
            vm.prank(holders[i]);
            token.approve(address(market), type(uint256).max);
        }
    }

    /// A token push that fails (the member is on the token's blocklist) becomes a credit in that
    /// token without blocking the other payouts; the member withdraws it once it can receive.
    function test_tokenPushToABlockedMember_becomesACredit_withdrawnLater() public {
        HostileToken token = _hostileToken();
        uint256 taskId = _post(_params(address(token), REWARD, BOND, 2));
        _claim(taskId, miners[0]);
        _claim(taskId, miners[1]);
        _submitAll(taskId);
        uint256 before0 = token.balanceOf(miners[0]);
        uint256 before1 = token.balanceOf(miners[1]);
        token.setBlocked(miners[1], true);
        uint256 owed = _share(REWARD, 2, 1) + BOND;
        vm.expectEmit(address(market));
        emit TaskMarket.PaymentDeferred(miners[1], address(token), owed);
        _accept(taskId);
        assertEq(token.balanceOf(miners[0]), before0 + _share(REWARD, 2, 0) + BOND, "the other member is paid");
        assertEq(token.balanceOf(miners[1]), before1, "nothing pushed to the blocked member");
        assertEq(market.creditOf(miners[1], address(token)), owed, "credited in the token");
        vm.expectRevert(bytes("HostileToken: blocked"));
        vm.prank(miners[1]);
        market.withdraw(address(token)); // still blocked: the credit stays
        token.setBlocked(miners[1], false);
        vm.prank(miners[1]);
        market.withdraw(address(token));
        assertEq(token.balanceOf(miners[1]), before1 + owed, "withdrawn");
        assertEq(market.creditOf(miners[1], address(token)), 0, "credit cleared");
        assertEq(token.balanceOf(address(market)), 0, "nothing left");
    }

    /// A token that starts charging a fee after the task was posted cannot short a bond: the
    /// claim is refused.
    function test_feeSwitchedOnAfterPosting_refusesTheClaim() public {
        HostileToken token = _hostileToken();
        uint256 taskId = _post(_params(address(token), REWARD, BOND, 2));
        token.setFee(true);
        address[] memory group = groupOf[taskId];
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketFeeOnTransfer.selector, address(token), BOND, BOND - BOND / 100)
        );
        vm.prank(miners[0]);
        market.claim(taskId, group);
        assertEq(uint256(market.getTask(taskId).claimed), 0, "no claim");
    }
}
