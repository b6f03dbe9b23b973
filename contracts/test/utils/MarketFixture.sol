// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {TaskMarket} from "../../src/TaskMarket.sol";
import {MantaTestToken} from "../../src/MantaTestToken.sol";

/// @notice A deployed market, a test token, a client, an arbiter and 32 registered miners with
/// their keys, the group of every task (the market keeps only its hash chain), and helpers that
/// drive a task through its lifecycle.
abstract contract MarketFixture is Test {
    uint32 internal constant CLAIM_WINDOW = 1 hours;
    uint32 internal constant WORK_WINDOW = 1 days;
    uint32 internal constant REVIEW_WINDOW = 2 hours;
    uint32 internal constant ARBITRATION_WINDOW = 3 hours;
    uint256 internal constant MINERS = 32;
    uint96 internal constant REWARD = 10 ether;
    uint96 internal constant BOND = 1 ether;
    bytes32 internal constant SPEC_HASH = keccak256("spec");
    bytes32 internal constant VALIDATION_HASH = keccak256("validation");
    bytes32 internal constant ROOT = keccak256("result manifest");
    bytes32 internal constant EVIDENCE = keccak256("checkpoint");

    TaskMarket internal market;
    MantaTestToken internal mtt;
    address internal client;
    address internal arbiter;
    address internal stranger;
    address[] internal miners;
    mapping(address => uint256) internal keyOf;
    mapping(uint256 taskId => address[]) internal groupOf;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        market = new TaskMarket();
        mtt = new MantaTestToken();
        (client,) = makeAccount("client");
        (arbiter,) = makeAccount("arbiter");
        (stranger,) = makeAccount("stranger");
        vm.deal(client, 1_000_000 ether);
        mtt.mint(client, 1_000_000 ether);
        vm.prank(client);
        mtt.approve(address(market), type(uint256).max);
        for (uint256 i; i < MINERS; ++i) {
            (address miner, uint256 key) = makeAccount(string.concat("miner", vm.toString(i)));
            miners.push(miner);
            keyOf[miner] = key;
            vm.deal(miner, 1_000 ether);
            mtt.mint(miner, 1_000 ether);
            vm.startPrank(miner);
            mtt.approve(address(market), type(uint256).max);
            market.register(string.concat("http://miner", vm.toString(i), ".example:8700"));
            vm.stopPrank();
        }
    }

    function _params(address token, uint96 reward, uint96 bond, uint8 slots)
        internal
        view
        returns (TaskMarket.TaskParams memory)
    {
        return TaskMarket.TaskParams({
            token: token,
            reward: reward,
            bond: bond,
            slots: slots,
            claimWindow: CLAIM_WINDOW,
            workWindow: WORK_WINDOW,
            reviewWindow: REVIEW_WINDOW,
            arbitrationWindow: ARBITRATION_WINDOW,
            arbiter: arbiter,
            specHash: SPEC_HASH,
            validationHash: VALIDATION_HASH
        });
    }

    function _post(TaskMarket.TaskParams memory p) internal returns (uint256 taskId) {
        vm.prank(client);
        taskId = market.postTask{value: p.token == address(0) ? p.reward : 0}(p, "ipfs://spec");
    }

    function _postNative(uint8 slots) internal returns (uint256) {
        return _post(_params(address(0), REWARD, BOND, slots));
    }

    function _claim(uint256 taskId, address miner) internal {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        vm.prank(miner);
        market.claim{value: t.token == address(0) ? t.bond : 0}(taskId, groupOf[taskId]);
        groupOf[taskId].push(miner);
    }

    /// @dev Posts a task and fills all its slots with miners 0..slots-1.
    function _running(address token, uint8 slots) internal returns (uint256 taskId) {
        taskId = _post(_params(token, REWARD, BOND, slots));
        for (uint256 i; i < slots; ++i) {
            _claim(taskId, miners[i]);
        }
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev Signatures of the members whose bit is set in `mask` (empty for the others).
    function _signatures(uint256 taskId, bytes32 root, uint256 mask) internal view returns (bytes[] memory sigs) {
        address[] storage group = groupOf[taskId];
        bytes32 digest = market.resultDigest(taskId, root);
        sigs = new bytes[](group.length);
        for (uint256 i; i < group.length; ++i) {
            if (mask & (uint256(1) << i) != 0) sigs[i] = _sign(keyOf[group[i]], digest);
        }
    }

    /// @dev Member `by` submits ROOT signed by the members in `mask` (`by` signs by sending).
    function _submitBy(uint256 taskId, uint256 by, uint256 mask) internal {
        bytes[] memory sigs = _signatures(taskId, ROOT, mask);
        vm.prank(groupOf[taskId][by]);
        market.submitResult(taskId, ROOT, "http://miner0.example:8700/result", groupOf[taskId], sigs);
    }

    function _submitAll(uint256 taskId) internal {
        _submitBy(taskId, 0, type(uint256).max);
    }

    function _submitted(address token, uint8 slots) internal returns (uint256 taskId) {
        taskId = _running(token, slots);
        _submitAll(taskId);
    }

    function _accept(uint256 taskId) internal {
        vm.prank(client);
        market.accept(taskId, groupOf[taskId]);
    }

    function _checkIn(uint256 taskId, address miner) internal {
        vm.prank(miner);
        market.checkIn(taskId, groupOf[taskId], EVIDENCE);
    }

    function _share(uint256 reward, uint256 n, uint256 slot) internal pure returns (uint256 share) {
        share = reward / n;
        if (slot == 0) share += reward - share * n;
    }

    function _balanceOf(address token, address account) internal view returns (uint256) {
        return token == address(0) ? account.balance : mtt.balanceOf(account);
    }

    function _now() internal view returns (uint256) {
        return block.timestamp;
    }
}
