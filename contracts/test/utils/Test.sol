// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm} from "./Vm.sol";

/// @notice A tiny stand-in for forge-std's Test: the cheatcode handle, assertions that report
/// both sides, named addresses, and the target lists forge reads to drive invariant tests.
abstract contract Test {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    bool public IS_TEST = true;
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);

    address[] private _targetedContracts;
    address[] private _targetedSenders;
    FuzzSelector[] private _targetedSelectors;

    // ------------------------------------------------------------ assertions

    function assertEq(uint256 left, uint256 right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(address left, address right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(bytes32 left, bytes32 right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(bool left, bool right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(int256 left, int256 right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertTrue(bool condition, string memory what) internal pure {
        if (!condition) vm.assertTrue(condition, what);
    }

    function assertLe(uint256 left, uint256 right, string memory what) internal pure {
        if (left > right) vm.assertLe(left, right, what);
    }

    /// @dev Maps a fuzzed value into [min, max] without discarding runs.
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        return min + (x % (max - min + 1));
    }

    function makeAccount(string memory name) internal returns (address account, uint256 privateKey) {
        privateKey = uint256(keccak256(bytes(name))) % 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 + 1;
        account = vm.addr(privateKey);
        vm.label(account, name);
    }

    /// @dev console.log(string, uint256) without forge-std: forge prints it with -vv.
    function _log(string memory what, uint256 value) internal view {
        address console = 0x000000000000000000636F6e736F6c652e6c6f67;
        (bool ok,) = console.staticcall(abi.encodeWithSignature("log(string,uint256)", what, value));
        ok;
    }

    // ------------------------------------------------------------ invariant targets (read by forge)

    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function targetSender(address sender) internal {
        _targetedSenders.push(sender);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetedSelectors.push(selector);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function targetSenders() public view returns (address[] memory) {
        return _targetedSenders;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }
}
