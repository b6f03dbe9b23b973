// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {TaskMarket} from "../src/TaskMarket.sol";
import {ReenteringClient} from "./utils/Mocks.sol";

/// @notice Every transition of the lifecycle, in the native coin and in an ERC-20.
contract TaskMarketLifecycleTest is MarketFixture {
    function test_register_setsAndReplacesEndpoint() public {
        address miner = miners[0];
        assertEq(keccak256(bytes(market.endpointOf(miner))), keccak256("http://miner0.example:8700"), "initial");
        vm.expectEmit(address(market));
        emit TaskMarket.MinerRegistered(miner, "https://new.example");
        vm.prank(miner);
        market.register("https://new.example");
        assertEq(keccak256(bytes(market.endpointOf(miner))), keccak256("https://new.example"), "replaced");
        assertEq(bytes(market.endpointOf(stranger)).length, 0, "unregistered has no endpoint");
    }

    function test_postTask_native_escrowsAndRecords() public {
        TaskMarket.TaskParams memory p = _params(address(0), 10 ether, 1 ether, 3);
        uint64 claimDeadline = uint64(block.timestamp + CLAIM_WINDOW);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskPosted(
            1, client, address(0), 10 ether, 1 ether, 3, claimDeadline, WORK_WINDOW, REVIEW_WINDOW,
            ARBITRATION_WINDOW, arbiter, SPEC_HASH, VALIDATION_HASH, "ipfs://spec"
        );
        uint256 taskId = _post(p);
        assertEq(taskId, 1, "ids start at 1");
        assertEq(market.taskCount(), 1, "count");
        assertEq(address(market).balance, 10 ether, "escrow");
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertEq(t.client, client, "client");
        assertEq(t.token, address(0), "token");
        assertEq(t.reward, 10 ether, "reward");
        assertEq(t.bond, 1 ether, "bond");
        assertEq(t.arbiter, arbiter, "arbiter");
        assertEq(t.slots, 3, "slots");
        assertEq(t.claimed, 0, "claimed");
        assertTrue(t.state == TaskMarket.State.Open, "open");
        assertEq(t.claimDeadline, claimDeadline, "claim deadline");
        assertEq(t.workDeadline, 0, "no work deadline yet");
        assertEq(t.settleDeadline, 0, "no settle deadline");
        assertEq(t.workWindow, WORK_WINDOW, "work window");
        assertEq(t.reviewWindow, REVIEW_WINDOW, "review window");
        assertEq(t.arbitrationWindow, ARBITRATION_WINDOW, "arbitration window");
        assertEq(t.specHash, SPEC_HASH, "spec hash");
        assertEq(t.resultRoot, bytes32(0), "no result");
        assertEq(_postNative(1), 2, "next id");
    }

    function test_postTask_token_pullsReward() public {
        uint256 before = mtt.balanceOf(client);
        uint256 taskId = _postToken(2);
        assertEq(mtt.balanceOf(address(market)), 10 ether, "escrow");
        assertEq(mtt.balanceOf(client), before - 10 ether, "client paid");
        assertEq(market.getTask(taskId).token, address(mtt), "token");
    }

    function test_claim_fillsSlotsInOrderAndStarts() public {
        _checkClaims(address(0));
        _checkClaims(address(mtt));
    }

    function _checkClaims(address token) internal {
        uint256 taskId = _post(_params(token, 10 ether, 1 ether, 2));
        uint256 before = _balanceOf(token, address(market));
        vm.expectEmit(address(market));
        emit TaskMarket.TaskClaimed(taskId, miners[3], 0);
        _claim(taskId, miners[3]);
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Open, "still open");
        vm.warp(block.timestamp + 10);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskClaimed(taskId, miners[1], 1);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskStarted(taskId, uint64(block.timestamp + WORK_WINDOW));
        _claim(taskId, miners[1]);
        address[] memory group = market.membersOf(taskId);
        assertEq(group.length, 2, "group size");
        assertEq(group[0], miners[3], "leader is the first claimer");
        assertEq(group[1], miners[1], "slot 1");
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertTrue(t.state == TaskMarket.State.Running, "running");
        assertEq(t.workDeadline, block.timestamp + WORK_WINDOW, "work deadline from the last claim");
        assertEq(_balanceOf(token, address(market)) - before, 2 ether, "bonds held");
    }

    function test_claimWindowEnd_startsPartialGroupImplicitly() public {
        uint256 taskId = _postNative(3);
        _claim(taskId, miners[0]);
        uint256 claimDeadline = block.timestamp + CLAIM_WINDOW;
        vm.warp(claimDeadline);
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Open, "open at the deadline");
        vm.warp(claimDeadline + 1);
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertTrue(t.state == TaskMarket.State.Running, "running after the claim window");
        assertEq(t.workDeadline, claimDeadline + WORK_WINDOW, "implied work deadline");
        _submit(taskId, _equalShares(10 ether, 1));
        t = market.getTask(taskId);
        assertTrue(t.state == TaskMarket.State.Submitted, "submitted");
        assertEq(t.workDeadline, claimDeadline + WORK_WINDOW, "work deadline kept");
    }

    function test_submitResult_recordsRootAndReviewDeadline() public {
        uint256 taskId = _running(address(0), 3);
        uint96[] memory shares = new uint96[](3);
        shares[0] = 5 ether;
        shares[1] = 3 ether;
        shares[2] = 2 ether;
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        vm.expectEmit(address(market));
        emit TaskMarket.ResultSubmitted(taskId, miners[0], ROOT, shares, uint64(block.timestamp + REVIEW_WINDOW), "uri");
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "uri", shares, sigs);
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertTrue(t.state == TaskMarket.State.Submitted, "submitted");
        assertEq(t.resultRoot, ROOT, "root");
        assertEq(t.settleDeadline, block.timestamp + REVIEW_WINDOW, "review deadline");
    }

    function test_accept_paysSharesAndBonds() public {
        _checkAccept(address(0));
        _checkAccept(address(mtt));
    }

    function _checkAccept(address token) internal {
        uint256 taskId = _running(token, 2);
        uint96[] memory shares = new uint96[](2);
        shares[0] = 7 ether;
        shares[1] = 3 ether;
        _submit(taskId, shares);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskSettled(taskId, true);
        vm.prank(client);
        market.accept(taskId);
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Settled, "settled");
        assertEq(market.creditOf(miners[0], token), 8 ether, "leader share + bond");
        assertEq(market.creditOf(miners[1], token), 4 ether, "member share + bond");
        assertEq(market.creditOf(client, token), 0, "client gets nothing");
        _withdrawAll(token, miners[0], 8 ether);
        _withdrawAll(token, miners[1], 4 ether);
        assertEq(_balanceOf(token, address(market)), 0, "market emptied");
    }

    function _withdrawAll(address token, address account, uint256 amount) internal {
        uint256 before = _balanceOf(token, account);
        vm.expectEmit(address(market));
        emit TaskMarket.Withdrawn(account, token, amount);
        vm.prank(account);
        market.withdraw(token);
        assertEq(_balanceOf(token, account) - before, amount, "paid out");
        assertEq(market.creditOf(account, token), 0, "credit cleared");
    }

    function test_reputation_countsCompletedTasks() public {
        uint256 taskId = _submitted(address(0), 2);
        vm.prank(client);
        market.accept(taskId);
        (uint32 completed, uint32 failed, uint32 lost) = market.reputationOf(miners[1]);
        assertEq(completed, 1, "completed");
        assertEq(failed, 0, "failed");
        assertEq(lost, 0, "lost");
        vm.prank(miners[1]);
        market.withdraw(address(0));
        (completed,,) = market.reputationOf(miners[1]);
        assertEq(completed, 1, "withdraw keeps reputation");
    }

    function test_finalize_afterReviewWindow_paysMiners() public {
        uint256 taskId = _submitted(address(0), 1);
        vm.warp(block.timestamp + REVIEW_WINDOW + 1);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskSettled(taskId, true);
        vm.prank(stranger);
        market.finalize(taskId);
        assertEq(market.creditOf(miners[0], address(0)), 11 ether, "reward + bond");
    }

    function test_dispute_thenArbiterSidesWithMiners() public {
        uint256 taskId = _submitted(address(mtt), 2);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskDisputed(taskId, keccak256("bad"), uint64(block.timestamp + ARBITRATION_WINDOW));
        vm.prank(client);
        market.dispute(taskId, keccak256("bad"));
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertTrue(t.state == TaskMarket.State.Disputed, "disputed");
        assertEq(t.settleDeadline, block.timestamp + ARBITRATION_WINDOW, "arbitration deadline");
        vm.expectEmit(address(market));
        emit TaskMarket.DisputeResolved(taskId, arbiter, true);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskSettled(taskId, true);
        vm.prank(arbiter);
        market.resolve(taskId, true);
        assertEq(market.creditOf(miners[0], address(mtt)), 6 ether, "share + bond");
        assertEq(market.creditOf(miners[1], address(mtt)), 6 ether, "share + bond");
        assertEq(market.getTask(taskId).settleDeadline, 0, "no settle deadline once settled");
    }

    function test_dispute_thenArbiterSidesWithClient() public {
        uint256 taskId = _submitted(address(0), 3);
        vm.prank(client);
        market.dispute(taskId, keccak256("bad"));
        vm.expectEmit(address(market));
        emit TaskMarket.DisputeResolved(taskId, arbiter, false);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskSettled(taskId, false);
        vm.prank(arbiter);
        market.resolve(taskId, false);
        assertEq(market.creditOf(client, address(0)), 13 ether, "reward + all bonds");
        for (uint256 i; i < 3; ++i) {
            assertEq(market.creditOf(miners[i], address(0)), 0, "miner gets nothing");
            (, , uint32 lost) = market.reputationOf(miners[i]);
            assertEq(lost, 1, "dispute lost");
        }
        _withdrawAll(address(0), client, 13 ether);
    }

    function test_finalize_silentArbiter_paysMiners() public {
        uint256 taskId = _submitted(address(0), 1);
        vm.prank(client);
        market.dispute(taskId, keccak256("bad"));
        vm.warp(block.timestamp + ARBITRATION_WINDOW + 1);
        market.finalize(taskId);
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Settled, "settled");
        assertEq(market.creditOf(miners[0], address(0)), 11 ether, "miners win");
    }

    function test_expire_openWithoutClaims_refundsClient() public {
        _checkExpireOpen(address(0));
        _checkExpireOpen(address(mtt));
    }

    function _checkExpireOpen(address token) internal {
        uint256 taskId = _post(_params(token, 10 ether, 1 ether, 2));
        vm.warp(block.timestamp + CLAIM_WINDOW + 1);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskExpired(taskId, false);
        vm.prank(stranger);
        market.expire(taskId);
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Expired, "expired");
        _withdrawAll(token, client, 10 ether);
    }

    function test_expire_runningWithoutResult_slashesBonds() public {
        _checkExpireRunning(address(0));
        _checkExpireRunning(address(mtt));
    }

    function _checkExpireRunning(address token) internal {
        uint256 taskId = _running(token, 3);
        vm.warp(block.timestamp + WORK_WINDOW + 1);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskExpired(taskId, true);
        market.expire(taskId);
        assertEq(market.creditOf(client, token), 13 ether, "reward + bonds");
        (, uint32 failed,) = market.reputationOf(miners[2]);
        assertTrue(failed >= 1, "failure counted");
        _withdrawAll(token, client, 13 ether);
    }

    function test_expire_returnsTheBondsOfMembersWhoCheckedIn() public {
        _checkExpireWithCheckIn(address(0));
        _checkExpireWithCheckIn(address(mtt));
    }

    function _checkExpireWithCheckIn(address token) internal {
        uint256 taskId = _running(token, 3);
        address[] memory group = market.membersOf(taskId);
        vm.warp(block.timestamp + WORK_WINDOW); // the deadline itself is still inside the window
        vm.expectEmit(address(market));
        emit TaskMarket.MemberCheckedIn(taskId, group[2], 2);
        vm.prank(group[2]);
        market.checkIn(taskId);
        vm.prank(group[0]);
        market.checkIn(taskId);
        assertTrue(market.isCheckedIn(taskId, group[2]), "member 2 checked in");
        assertTrue(!market.isCheckedIn(taskId, group[1]), "member 1 did not");
        assertTrue(!market.isCheckedIn(taskId, stranger), "not a member");
        uint32[3] memory failedBefore;
        for (uint256 i; i < 3; ++i) {
            (, failedBefore[i],) = market.reputationOf(group[i]);
        }
        vm.warp(block.timestamp + 1);
        market.expire(taskId);
        assertEq(market.creditOf(client, token), 11 ether, "reward + the silent member's bond");
        assertEq(market.creditOf(group[0], token), 1 ether, "leader's bond back");
        assertEq(market.creditOf(group[1], token), 0, "silent member slashed");
        assertEq(market.creditOf(group[2], token), 1 ether, "member 2's bond back");
        for (uint256 i; i < 3; ++i) {
            (, uint32 failed,) = market.reputationOf(group[i]);
            assertEq(failed, failedBefore[i] + 1, "every member counts the failure");
        }
        _withdrawAll(token, client, 11 ether);
        _withdrawAll(token, group[2], 1 ether);
    }

    function test_checkIn_ofTheLastOfTenSlots() public {
        uint256 taskId = _running(address(0), 10);
        address last = market.membersOf(taskId)[9];
        vm.prank(last);
        market.checkIn(taskId);
        assertTrue(market.isCheckedIn(taskId, last), "slot 9 checked in");
        vm.warp(block.timestamp + WORK_WINDOW + 1);
        market.expire(taskId);
        assertEq(market.creditOf(last, address(0)), 1 ether, "slot 9's bond back");
        assertEq(market.creditOf(client, address(0)), 19 ether, "reward + nine bonds");
    }

    function test_expire_whenEveryMemberCheckedIn_slashesEveryBond() public {
        uint256 taskId = _running(address(0), 2);
        address[] memory group = market.membersOf(taskId);
        for (uint256 i; i < 2; ++i) {
            vm.prank(group[i]);
            market.checkIn(taskId);
        }
        vm.warp(block.timestamp + WORK_WINDOW + 1);
        vm.expectEmit(address(market));
        emit TaskMarket.TaskExpired(taskId, true);
        market.expire(taskId);
        assertEq(market.creditOf(client, address(0)), 12 ether, "reward + both bonds");
        assertEq(market.creditOf(group[0], address(0)), 0, "nobody vanished: no bond back");
    }

    function test_lostDispute_slashesEvenMembersWhoCheckedIn() public {
        uint256 taskId = _running(address(0), 2);
        address[] memory group = market.membersOf(taskId);
        vm.prank(group[1]);
        market.checkIn(taskId);
        _submit(taskId, _equalShares(10 ether, 2));
        vm.prank(client);
        market.dispute(taskId, bytes32("bad"));
        vm.prank(arbiter);
        market.resolve(taskId, false);
        assertEq(market.creditOf(client, address(0)), 12 ether, "reward + both bonds");
        assertEq(market.creditOf(group[1], address(0)), 0, "no bond back after a lost dispute");
    }

    function test_expire_implicitlyStartedTask() public {
        uint256 taskId = _postNative(4);
        _claim(taskId, miners[0]);
        _claim(taskId, miners[1]);
        uint256 workDeadline = block.timestamp + CLAIM_WINDOW + WORK_WINDOW;
        vm.warp(workDeadline + 1);
        market.expire(taskId);
        assertEq(market.creditOf(client, address(0)), 12 ether, "reward + the two bonds");
        TaskMarket.TaskView memory t = market.getTask(taskId);
        assertTrue(t.state == TaskMarket.State.Expired, "expired");
        assertEq(t.workDeadline, workDeadline, "implied work deadline still reported");
    }

    function test_cancel_refundsClient() public {
        _checkCancel(address(0));
        _checkCancel(address(mtt));
    }

    function _checkCancel(address token) internal {
        uint256 taskId = _post(_params(token, 10 ether, 1 ether, 1));
        vm.expectEmit(address(market));
        emit TaskMarket.TaskCancelled(taskId);
        vm.prank(client);
        market.cancel(taskId);
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Cancelled, "cancelled");
        _withdrawAll(token, client, 10 ether);
    }

    function test_zeroBond_isAllowed() public {
        uint256 taskId = _post(_params(address(0), 1 ether, 0, 1));
        vm.prank(miners[0]);
        market.claim(taskId);
        _submit(taskId, _equalShares(1 ether, 1));
        vm.prank(client);
        market.accept(taskId);
        assertEq(market.creditOf(miners[0], address(0)), 1 ether, "share only");
    }

    function test_credits_accumulateAcrossTasksAndTokens() public {
        uint256 a = _submitted(address(0), 1);
        uint256 b = _submitted(address(mtt), 1);
        uint256 c = _submitted(address(0), 1);
        vm.startPrank(client);
        market.accept(a);
        market.accept(b);
        market.accept(c);
        vm.stopPrank();
        assertEq(market.creditOf(miners[0], address(0)), 22 ether, "two native tasks");
        assertEq(market.creditOf(miners[0], address(mtt)), 11 ether, "one token task");
        _withdrawAll(address(0), miners[0], 22 ether);
        assertEq(market.creditOf(miners[0], address(mtt)), 11 ether, "other token untouched");
    }

    function test_resultDigest_isEip712() public view {
        uint96[] memory shares = _equalShares(10 ether, 2);
        bytes32 typeHash = keccak256("Result(uint256 taskId,bytes32 resultRoot,uint96[] shares)");
        bytes32 structHash = keccak256(abi.encode(typeHash, uint256(7), ROOT, keccak256(abi.encodePacked(shares))));
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("MANTA TaskMarket"),
                keccak256("1"),
                block.chainid,
                address(market)
            )
        );
        bytes32 expected = keccak256(abi.encodePacked("\x19\x01", domain, structHash));
        assertEq(market.resultDigest(7, ROOT, shares), expected, "digest");
        (, string memory name, string memory version, uint256 chainId, address verifying,,) = market.eip712Domain();
        assertEq(keccak256(bytes(name)), keccak256("MANTA TaskMarket"), "name");
        assertEq(keccak256(bytes(version)), keccak256("1"), "version");
        assertEq(chainId, block.chainid, "chain id");
        assertEq(verifying, address(market), "verifying contract");
    }

    function test_reentrantWithdraw_paysOnce() public {
        ReenteringClient attacker = new ReenteringClient();
        uint256 taskId = attacker.post{value: 5 ether}(market, _params(address(0), 5 ether, 0, 1));
        attacker.cancel(taskId);
        attacker.withdraw();
        assertEq(address(attacker).balance, 5 ether, "paid exactly once");
        assertEq(attacker.reentryAttempts(), 1, "tried to re-enter");
        assertEq(attacker.reentrySucceeded(), false, "guard held");
        assertEq(address(market).balance, 0, "market empty");
    }

    function test_fullGroupOf32_submitsAndSettles() public {
        uint256 taskId = _post(_params(address(0), 32 ether, 1 ether, 32));
        for (uint256 i; i < 32; ++i) {
            (address miner, uint256 key) = makeAccount(string.concat("big", vm.toString(i)));
            keyOf[miner] = key;
            vm.deal(miner, 1 ether);
            vm.startPrank(miner);
            market.register("http://big.example");
            market.claim{value: 1 ether}(taskId);
            vm.stopPrank();
        }
        assertTrue(market.stateOf(taskId) == TaskMarket.State.Running, "full group runs");
        _submit(taskId, _equalShares(32 ether, 32));
        vm.prank(client);
        market.accept(taskId);
        address[] memory group = market.membersOf(taskId);
        assertEq(group.length, 32, "32 members");
        for (uint256 i; i < 32; ++i) {
            assertEq(market.creditOf(group[i], address(0)), 2 ether, "share + bond");
        }
    }
}
