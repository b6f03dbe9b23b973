// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {TaskMarket} from "../src/TaskMarket.sol";

/// @notice Property tests over group sizes, signer sets, amounts and deadlines.
contract TaskMarketFuzzTest is MarketFixture {
    /// @dev Group sizes 1..32 and any signer set (testFuzz_quorumAndPayouts): the submit succeeds
    /// exactly when a strict majority signed; after settlement and the sweep each signer got its
    /// share and bond, each silent non-signer nothing, the unendorsed shares went back to the
    /// client, the silent bonds were burned, and the market holds exactly the burn.
    struct Case {
        uint256 n;
        uint256 mask;
        uint256 by;
        uint96 reward;
        uint96 bond;
        address token;
        uint256 taskId;
        uint256 signed;
    }

    function testFuzz_quorumAndPayouts(uint256 n, uint256 mask, uint256 by, uint96 reward, bool late, bool token)
        public
    {
        Case memory c;
        c.n = bound(n, 1, 32);
        c.by = bound(by, 0, c.n - 1);
        c.reward = uint96(bound(reward, 1, 1_000 ether));
        c.bond = uint96((uint256(c.reward) + 100 * c.n - 1) / (100 * c.n)); // the floor
        c.token = token ? address(mtt) : address(0);
        c.taskId = _post(_params(c.token, c.reward, c.bond, uint8(c.n)));
        for (uint256 i; i < c.n; ++i) {
            _claim(c.taskId, miners[i]);
        }
        c.mask = (mask | (uint256(1) << c.by)) & ((uint256(1) << c.n) - 1);
        c.signed = _popcount(c.mask);
        uint256[] memory before = new uint256[](c.n + 1);
        for (uint256 i; i < c.n; ++i) {
            before[i] = _balanceOf(c.token, miners[i]);
        }
        before[c.n] = _balanceOf(c.token, client);
        if (!_trySubmit(c)) return;
        address[] memory group = groupOf[c.taskId];
        if (late) {
            vm.warp(_now() + REVIEW_WINDOW + 1);
            market.finalize(c.taskId, group);
        } else {
            _accept(c.taskId);
            vm.warp(_now() + REVIEW_WINDOW + 1);
            if (c.signed < c.n) market.sweep(c.taskId, group);
        }
        _checkPayouts(c, before);
    }

    function _trySubmit(Case memory c) internal returns (bool ok) {
        bytes[] memory sigs = _signatures(c.taskId, ROOT, c.mask);
        address[] memory group = groupOf[c.taskId];
        vm.prank(miners[c.by]);
        try market.submitResult(c.taskId, ROOT, "", group, sigs) {
            assertTrue(c.signed >= c.n / 2 + 1, "a minority cannot submit");
            ok = true;
        } catch {
            assertTrue(c.signed < c.n / 2 + 1, "a majority can always submit");
        }
    }

    function _checkPayouts(Case memory c, uint256[] memory before) internal view {
        uint256 refund;
        for (uint256 i; i < c.n; ++i) {
            uint256 share = _share(c.reward, c.n, i);
            if (c.mask & (uint256(1) << i) != 0) {
                assertEq(_balanceOf(c.token, miners[i]), before[i] + share + c.bond, "signer: share and bond");
            } else {
                assertEq(_balanceOf(c.token, miners[i]), before[i], "silent: nothing");
                refund += share;
            }
        }
        assertEq(_balanceOf(c.token, client), before[c.n] + refund, "the unendorsed shares back");
        assertEq(market.burnedOf(c.token), (c.n - c.signed) * uint256(c.bond), "silent bonds burned");
        uint256 paid = _balanceOf(c.token, client) - before[c.n];
        for (uint256 i; i < c.n; ++i) {
            paid += _balanceOf(c.token, miners[i]) - before[i];
        }
        assertEq(paid + market.burnedOf(c.token), uint256(c.reward) + c.n * uint256(c.bond), "paid + burned == reward + bonds");
        assertEq(market.creditOf(client, c.token), 0, "pushed, not credited");
        assertEq(_balanceOf(c.token, address(market)), market.burnedOf(c.token), "the market holds the burn only");
    }

    /// @dev A member left out of the result answers at a random time with a random action:
    /// inside the settle deadline it gets back what it asked for; past it, nothing changes.
    function testFuzz_leftOutMember_answersUntilTheDeadline(uint256 offset, bool endorse, bool acceptFirst) public {
        uint256 taskId = _running(address(0), 3);
        _submitBy(taskId, 0, 3);
        if (acceptFirst) _accept(taskId);
        uint256 deadline = market.getTask(taskId).settleDeadline;
        vm.warp(bound(offset, _now(), deadline + 1 days));
        uint256 before = miners[2].balance;
        address[] memory group = groupOf[taskId];
        vm.prank(miners[2]);
        bool ok;
        if (endorse) {
            try market.endorse(taskId, group) {
                ok = true;
            } catch {}
        } else {
            try market.checkIn(taskId, group, EVIDENCE) {
                ok = true;
            } catch {}
        }
        assertEq(ok, _now() <= deadline, "open exactly until the settle deadline");
        if (ok && acceptFirst) {
            uint256 owed = endorse ? _share(REWARD, 3, 2) + BOND : BOND;
            assertEq(miners[2].balance, before + owed, "paid at once after an early accept");
        }
        if (!acceptFirst && ok) {
            vm.prank(client);
            market.accept(taskId, group);
            uint256 owed = endorse ? _share(REWARD, 3, 2) + BOND : BOND;
            assertEq(miners[2].balance, before + owed, "paid by the accept");
        }
    }

    /// @dev Around the work deadline exactly one of submit and expire is possible.
    function testFuzz_workDeadline_submitXorExpire(uint32 workWindow, uint256 offset) public {
        workWindow = uint32(bound(workWindow, 1, market.MAX_WORK_WINDOW()));
        TaskMarket.TaskParams memory p = _params(address(0), REWARD, BOND, 1);
        p.workWindow = workWindow;
        uint256 taskId = _post(p);
        _claim(taskId, miners[0]);
        uint256 workDeadline = _now() + workWindow;
        assertEq(market.getTask(taskId).workDeadline, workDeadline, "work deadline");
        vm.warp(bound(offset, _now(), workDeadline + 2 days));
        bool canSubmit = _succeeds(abi.encodeCall(this.submitAsLeader, (taskId)));
        bool canExpire = _succeeds(abi.encodeCall(this.expireAsStranger, (taskId)));
        assertTrue(canSubmit != canExpire, "exactly one exit");
        assertEq(canExpire, _now() > workDeadline, "expire only after the deadline");
    }

    /// @dev Around the review deadline exactly one of dispute and finalize is possible.
    function testFuzz_reviewDeadline_disputeXorFinalize(uint32 reviewWindow, uint256 offset) public {
        reviewWindow = uint32(bound(reviewWindow, 1, market.MAX_REVIEW_WINDOW()));
        TaskMarket.TaskParams memory p = _params(address(0), REWARD, BOND, 1);
        p.reviewWindow = reviewWindow;
        uint256 taskId = _post(p);
        _claim(taskId, miners[0]);
        _submitAll(taskId);
        uint256 reviewDeadline = _now() + reviewWindow;
        assertEq(market.getTask(taskId).settleDeadline, reviewDeadline, "review deadline");
        vm.warp(bound(offset, _now(), reviewDeadline + 2 days));
        bool canDispute = _succeeds(abi.encodeCall(this.disputeAsClient, (taskId)));
        bool canFinalize = _succeeds(abi.encodeCall(this.finalizeAsStranger, (taskId)));
        assertTrue(canDispute != canFinalize, "exactly one of dispute and finalize");
        assertEq(canFinalize, _now() > reviewDeadline, "finalize only after the deadline");
    }

    /// @dev Around the claim deadline of an unclaimed task exactly one of cancel and expire is
    /// possible, and claims are open exactly while cancel is.
    function testFuzz_claimDeadline_cancelXorExpire(uint32 claimWindow, uint256 offset) public {
        claimWindow = uint32(bound(claimWindow, 1, market.MAX_CLAIM_WINDOW()));
        TaskMarket.TaskParams memory p = _params(address(0), REWARD, BOND, 2);
        p.claimWindow = claimWindow;
        uint256 taskId = _post(p);
        uint256 claimDeadline = _now() + claimWindow;
        vm.warp(bound(offset, _now(), claimDeadline + 2 days));
        bool canCancel = _succeeds(abi.encodeCall(this.cancelAsClient, (taskId)));
        bool canExpire = _succeeds(abi.encodeCall(this.expireAsStranger, (taskId)));
        bool canClaim = _succeeds(abi.encodeCall(this.claimAsMiner, (taskId)));
        assertTrue(canCancel != canExpire, "exactly one of cancel and expire");
        assertEq(canClaim, canCancel, "claims are open exactly while cancel is");
    }

    /// @dev A signature by any key but the member's is refused.
    function testFuzz_foreignKey_isRefused(uint256 key) public {
        key = bound(key, 1, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140);
        vm.assume(key != keyOf[miners[1]]);
        uint256 taskId = _running(address(0), 3);
        bytes[] memory sigs = new bytes[](3);
        sigs[1] = _sign(key, market.resultDigest(taskId, ROOT));
        address[] memory group = groupOf[taskId];
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadSignature.selector, taskId, 1));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", group, sigs);
    }

    // ------------------------------------------------------------ probes (state rolled back)

    error Probed();

    function _succeeds(bytes memory call) internal returns (bool ok) {
        try this.probe(call) {} catch (bytes memory reason) {
            ok = bytes4(reason) == Probed.selector;
        }
    }

    function probe(bytes memory call) external {
        (bool ok,) = address(this).call(call);
        if (ok) revert Probed();
        revert("call failed");
    }

    function submitAsLeader(uint256 taskId) external {
        _submitAll(taskId);
    }

    function expireAsStranger(uint256 taskId) external {
        vm.prank(stranger);
        market.expire(taskId, groupOf[taskId]);
    }

    function disputeAsClient(uint256 taskId) external {
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
    }

    function finalizeAsStranger(uint256 taskId) external {
        vm.prank(stranger);
        market.finalize(taskId, groupOf[taskId]);
    }

    function cancelAsClient(uint256 taskId) external {
        vm.prank(client);
        market.cancel(taskId);
    }

    function claimAsMiner(uint256 taskId) external {
        vm.prank(miners[MINERS - 1]);
        market.claim{value: BOND}(taskId, groupOf[taskId]);
    }

    function _popcount(uint256 x) internal pure returns (uint256 c) {
        for (; x != 0; x &= x - 1) {
            ++c;
        }
    }

    receive() external payable {}
}
