// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {TaskMarket} from "../src/TaskMarket.sol";

/// @notice Random rewards, bonds, group sizes, splits, windows and timings.
contract TaskMarketFuzzTest is MarketFixture {
    /// @dev A whole task with a random split: every member ends with exactly its share plus its
    /// bond, and once everybody withdrew the market holds nothing.
    function testFuzz_lifecycle_randomSplit(uint96 reward, uint96 bond, uint8 slots, uint256 seed, bool useToken)
        public
    {
        reward = uint96(bound(reward, 1, 100 ether));
        bond = uint96(bound(bond, 0, 10 ether));
        slots = uint8(bound(slots, 1, MINERS));
        address token = useToken ? address(mtt) : address(0);
        uint256 taskId = _post(_params(token, reward, bond, slots));
        for (uint256 i; i < slots; ++i) {
            _claim(taskId, miners[i]);
        }
        uint96[] memory shares = _randomSplit(reward, slots, seed);
        _submit(taskId, shares);
        vm.prank(client);
        market.accept(taskId);
        for (uint256 i; i < slots; ++i) {
            assertEq(market.creditOf(miners[i], token), uint256(shares[i]) + bond, "share + bond");
            if (uint256(shares[i]) + bond != 0) {
                vm.prank(miners[i]);
                market.withdraw(token);
            }
        }
        assertEq(_balanceOf(token, address(market)), 0, "nothing left behind");
    }

    function _randomSplit(uint96 reward, uint256 n, uint256 seed) internal pure returns (uint96[] memory shares) {
        shares = new uint96[](n);
        uint256 left = reward;
        for (uint256 i; i + 1 < n; ++i) {
            uint256 share = uint256(keccak256(abi.encode(seed, i))) % (left + 1);
            shares[i] = uint96(share);
            left -= share;
        }
        shares[n - 1] = uint96(left);
    }

    /// @dev Client-wins outcomes credit the client with the reward plus every bond, whatever the sizes.
    function testFuzz_clientWins_collectsRewardAndBonds(uint96 reward, uint96 bond, uint8 slots, bool viaDispute)
        public
    {
        reward = uint96(bound(reward, 1, 100 ether));
        bond = uint96(bound(bond, 0, 10 ether));
        slots = uint8(bound(slots, 1, MINERS));
        uint256 taskId = _post(_params(address(0), reward, bond, slots));
        for (uint256 i; i < slots; ++i) {
            _claim(taskId, miners[i]);
        }
        if (viaDispute) {
            _submit(taskId, _equalShares(reward, slots));
            vm.prank(client);
            market.dispute(taskId, keccak256("bad"));
            vm.prank(arbiter);
            market.resolve(taskId, false);
        } else {
            vm.warp(block.timestamp + WORK_WINDOW + 1);
            market.expire(taskId);
        }
        assertEq(market.creditOf(client, address(0)), uint256(reward) + uint256(bond) * slots, "client credit");
        assertEq(address(market).balance, uint256(reward) + uint256(bond) * slots, "all held for the client");
    }

    /// @dev Around the work deadline exactly one of submit and expire is possible.
    function testFuzz_workDeadline_submitXorExpire(uint32 workWindow, uint256 offset) public {
        workWindow = uint32(bound(workWindow, 1, 365 days));
        TaskMarket.TaskParams memory p = _params(address(0), 1 ether, 1 ether, 1);
        p.workWindow = workWindow;
        uint256 taskId = _post(p);
        _claim(taskId, miners[0]);
        uint256 workDeadline = block.timestamp + workWindow;
        assertEq(market.getTask(taskId).workDeadline, workDeadline, "work deadline");
        vm.warp(bound(offset, block.timestamp, workDeadline + 2 days));
        bool canSubmit = _canSubmit(taskId);
        bool canExpire = _succeeds(abi.encodeCall(TaskMarket.expire, (taskId)), stranger);
        assertTrue(canSubmit != canExpire, "exactly one exit");
        assertEq(canExpire, block.timestamp > workDeadline, "expire only after the deadline");
    }

    /// @dev Around the review deadline exactly one of dispute and finalize is possible.
    function testFuzz_reviewDeadline_disputeXorFinalize(uint32 reviewWindow, uint256 offset) public {
        reviewWindow = uint32(bound(reviewWindow, 1, 365 days));
        TaskMarket.TaskParams memory p = _params(address(0), 1 ether, 1 ether, 1);
        p.reviewWindow = reviewWindow;
        uint256 taskId = _post(p);
        _claim(taskId, miners[0]);
        _submit(taskId, _equalShares(1 ether, 1));
        uint256 reviewDeadline = block.timestamp + reviewWindow;
        assertEq(market.getTask(taskId).settleDeadline, reviewDeadline, "review deadline");
        vm.warp(bound(offset, block.timestamp, reviewDeadline + 2 days));
        bool canDispute = _succeeds(abi.encodeCall(TaskMarket.dispute, (taskId, bytes32(0))), client);
        bool canFinalize = _succeeds(abi.encodeCall(TaskMarket.finalize, (taskId)), stranger);
        assertTrue(canDispute != canFinalize, "exactly one of dispute and finalize");
        assertEq(canFinalize, block.timestamp > reviewDeadline, "finalize only after the deadline");
    }

    /// @dev Around the arbitration deadline exactly one of resolve and finalize is possible.
    function testFuzz_arbitrationDeadline_resolveXorFinalize(uint32 arbitrationWindow, uint256 offset, bool minersWin)
        public
    {
        arbitrationWindow = uint32(bound(arbitrationWindow, 1, 365 days));
        TaskMarket.TaskParams memory p = _params(address(0), 1 ether, 1 ether, 1);
        p.arbitrationWindow = arbitrationWindow;
        uint256 taskId = _post(p);
        _claim(taskId, miners[0]);
        _submit(taskId, _equalShares(1 ether, 1));
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        uint256 deadline = block.timestamp + arbitrationWindow;
        vm.warp(bound(offset, block.timestamp, deadline + 2 days));
        bool canResolve = _succeeds(abi.encodeCall(TaskMarket.resolve, (taskId, minersWin)), arbiter);
        bool canFinalize = _succeeds(abi.encodeCall(TaskMarket.finalize, (taskId)), stranger);
        assertTrue(canResolve != canFinalize, "exactly one of resolve and finalize");
    }

    /// @dev Around the claim deadline of an unclaimed task exactly one of cancel and expire is possible.
    function testFuzz_claimDeadline_cancelXorExpire(uint32 claimWindow, uint256 offset) public {
        claimWindow = uint32(bound(claimWindow, 1, 365 days));
        TaskMarket.TaskParams memory p = _params(address(0), 1 ether, 1 ether, 2);
        p.claimWindow = claimWindow;
        uint256 taskId = _post(p);
        uint256 claimDeadline = block.timestamp + claimWindow;
        vm.warp(bound(offset, block.timestamp, claimDeadline + 2 days));
        bool canCancel = _succeeds(abi.encodeCall(TaskMarket.cancel, (taskId)), client);
        bool canExpire = _succeeds(abi.encodeCall(TaskMarket.expire, (taskId)), stranger);
        bool canClaim = _succeeds(abi.encodeCall(TaskMarket.claim, (taskId)), address(0));
        assertTrue(canCancel != canExpire, "exactly one of cancel and expire");
        assertEq(canClaim, canCancel, "claims are open exactly while cancel is");
    }

    /// @dev Windows of any size give the documented deadlines.
    function testFuzz_windows_giveDeadlines(uint32 claimWindow, uint32 workWindow, uint32 reviewWindow, uint32 arb)
        public
    {
        TaskMarket.TaskParams memory p = _params(address(0), 1 ether, 0, 1);
        uint256 room = (type(uint32).max - block.timestamp) / 4;
        p.claimWindow = uint32(bound(claimWindow, 1, room));
        p.workWindow = uint32(bound(workWindow, 1, room));
        p.reviewWindow = uint32(bound(reviewWindow, 1, room));
        p.arbitrationWindow = uint32(bound(arb, 1, room));
        uint256 taskId = _post(p);
        assertEq(market.getTask(taskId).claimDeadline, block.timestamp + p.claimWindow, "claim deadline");
        vm.prank(miners[0]);
        market.claim(taskId);
        assertEq(market.getTask(taskId).workDeadline, block.timestamp + p.workWindow, "work deadline");
        _submit(taskId, _equalShares(1 ether, 1));
        assertEq(market.getTask(taskId).settleDeadline, block.timestamp + p.reviewWindow, "review deadline");
        vm.prank(client);
        market.dispute(taskId, bytes32(0));
        assertEq(market.getTask(taskId).settleDeadline, block.timestamp + p.arbitrationWindow, "arbitration");
    }

    /// @dev Windows whose last possible deadline is past 2106 (uint32 seconds) are refused.
    function testFuzz_windowsBeyondHorizon_areRefused(uint32 claimWindow, uint32 workWindow) public {
        TaskMarket.TaskParams memory p = _params(address(0), 1 ether, 0, 1);
        p.claimWindow = uint32(bound(claimWindow, 1, type(uint32).max));
        p.workWindow = uint32(bound(workWindow, 1, type(uint32).max));
        uint256 latest = block.timestamp + p.claimWindow + p.workWindow + REVIEW_WINDOW + ARBITRATION_WINDOW;
        vm.assume(latest > type(uint32).max);
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBeyondTimeHorizon.selector, latest));
        vm.prank(client);
        market.postTask{value: 1 ether}(p, "");
    }

    /// @dev Any split that does not sum to the reward is refused.
    function testFuzz_badSplit_isRefused(uint96 reward, uint96 a, uint96 b) public {
        reward = uint96(bound(reward, 1, 100 ether));
        vm.assume(uint256(a) + uint256(b) != reward);
        uint256 taskId = _post(_params(address(0), reward, 0, 2));
        vm.prank(miners[0]);
        market.claim(taskId);
        vm.prank(miners[1]);
        market.claim(taskId);
        uint96[] memory shares = new uint96[](2);
        shares[0] = a;
        shares[1] = b;
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        vm.expectRevert(
            abi.encodeWithSelector(TaskMarket.TaskMarketBadShares.selector, taskId, uint256(a) + uint256(b), reward)
        );
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, sigs);
    }

    /// @dev A signature by any key other than the member's is refused.
    function testFuzz_foreignKey_isRefused(uint256 key) public {
        key = bound(key, 1, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364140);
        vm.assume(key != keyOf[miners[1]]);
        uint256 taskId = _running(address(0), 2);
        uint96[] memory shares = _equalShares(10 ether, 2);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        sigs[1] = _sign(key, market.resultDigest(taskId, ROOT, shares));
        vm.expectRevert(abi.encodeWithSelector(TaskMarket.TaskMarketBadSignature.selector, taskId, 1));
        vm.prank(miners[0]);
        market.submitResult(taskId, ROOT, "", shares, sigs);
    }

    // ------------------------------------------------------------ probes

    /// @dev Whether `data` from `caller` would succeed now; the state is rolled back either way.
    /// caller == address(0) means "the next unclaimed miner, paying its bond".
    function _succeeds(bytes memory data, address caller) internal returns (bool ok) {
        try this.probe(data, caller) {} catch (bytes memory reason) {
            ok = bytes4(reason) == Probed.selector;
        }
    }

    error Probed();

    function probe(bytes memory data, address caller) external {
        uint256 value;
        if (caller == address(0)) {
            caller = miners[MINERS - 1];
            value = 1 ether;
        }
        vm.prank(caller);
        (bool ok,) = address(market).call{value: value}(data);
        if (ok) revert Probed();
        revert("call failed");
    }

    function _canSubmit(uint256 taskId) internal returns (bool ok) {
        try this.probeSubmit(taskId) {} catch (bytes memory reason) {
            ok = bytes4(reason) == Probed.selector;
        }
    }

    function probeSubmit(uint256 taskId) external {
        uint96[] memory shares = _equalShares(market.getTask(taskId).reward, market.membersOf(taskId).length);
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        vm.prank(market.membersOf(taskId)[0]);
        (bool ok,) = address(market).call(
            abi.encodeCall(TaskMarket.submitResult, (taskId, ROOT, "", shares, sigs))
        );
        if (ok) revert Probed();
        revert("submit failed");
    }
}
