// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Test} from "./Test.sol";
import {TaskMarket} from "../../src/TaskMarket.sol";
import {MantaTestToken} from "../../src/MantaTestToken.sol";

/// @notice A deployed market, a test token, a client, an arbiter and registered miners with their
/// keys, plus helpers that drive a task through its lifecycle.
abstract contract MarketFixture is Test {
    uint32 internal constant CLAIM_WINDOW = 1 hours;
    uint32 internal constant WORK_WINDOW = 1 days;
    uint32 internal constant REVIEW_WINDOW = 2 hours;
    uint32 internal constant ARBITRATION_WINDOW = 3 hours;
    uint256 internal constant MINERS = 10;
    bytes32 internal constant SPEC_HASH = keccak256("spec");
    bytes32 internal constant VALIDATION_HASH = keccak256("validation");
    bytes32 internal constant ROOT = keccak256("result manifest");

    TaskMarket internal market;
    MantaTestToken internal mtt;
    address internal client;
    address internal arbiter;
    address internal stranger;
    address[] internal miners;
    mapping(address => uint256) internal keyOf;

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
            (address miner, uint256 key) = makeAccount(string.concat("miner", _digit(i)));
            miners.push(miner);
            keyOf[miner] = key;
            vm.deal(miner, 1_000 ether);
            mtt.mint(miner, 1_000 ether);
            vm.startPrank(miner);
            mtt.approve(address(market), type(uint256).max);
            market.register(string.concat("http://miner", _digit(i), ".example:8700"));
            vm.stopPrank();
        }
    }

    function _digit(uint256 i) internal pure returns (string memory) {
        return string(abi.encodePacked(bytes1(uint8(48 + i))));
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
        return _post(_params(address(0), 10 ether, 1 ether, slots));
    }

    function _postToken(uint8 slots) internal returns (uint256) {
        return _post(_params(address(mtt), 10 ether, 1 ether, slots));
    }

    function _claim(uint256 taskId, address miner) internal {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        vm.prank(miner);
        market.claim{value: t.token == address(0) ? t.bond : 0}(taskId);
    }

    /// @dev Posts a task and fills all its slots with miners 0..slots-1.
    function _running(address token, uint8 slots) internal returns (uint256 taskId) {
        taskId = _post(_params(token, 10 ether, 1 ether, slots));
        for (uint256 i; i < slots; ++i) {
            _claim(taskId, miners[i]);
        }
    }

    function _equalShares(uint256 reward, uint256 n) internal pure returns (uint96[] memory shares) {
        shares = new uint96[](n);
        uint256 each = reward / n;
        for (uint256 i; i < n; ++i) {
            shares[i] = uint96(each);
        }
        shares[0] += uint96(reward - each * n);
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signatures(uint256 taskId, bytes32 root, uint96[] memory shares)
        internal
        view
        returns (bytes[] memory sigs)
    {
        address[] memory group = market.membersOf(taskId);
        bytes32 digest = market.resultDigest(taskId, root, shares);
        sigs = new bytes[](group.length);
        for (uint256 i; i < group.length; ++i) {
            sigs[i] = _sign(keyOf[group[i]], digest);
        }
    }

    function _submit(uint256 taskId, uint96[] memory shares) internal {
        bytes[] memory sigs = _signatures(taskId, ROOT, shares);
        vm.prank(market.membersOf(taskId)[0]);
        market.submitResult(taskId, ROOT, "http://miner0.example:8700/result", shares, sigs);
    }

    function _submitted(address token, uint8 slots) internal returns (uint256 taskId) {
        taskId = _running(token, slots);
        _submit(taskId, _equalShares(10 ether, slots));
    }

    function _balanceOf(address token, address account) internal view returns (uint256) {
        return token == address(0) ? account.balance : mtt.balanceOf(account);
    }
}
