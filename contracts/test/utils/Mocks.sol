// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {TaskMarket} from "../../src/TaskMarket.sol";

/// @notice An ERC-20 that burns 1% of every transfer, which the market must refuse.
contract FeeOnTransferToken is ERC20 {
    constructor() ERC20("Fee Token", "FEE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 fee = value / 100;
            super._update(from, address(0), fee);
            value -= fee;
        }
        super._update(from, to, value);
    }
}

/// @notice A client contract that cannot receive the native coin (its withdraw must fail cleanly).
contract RejectingClient {
    function post(TaskMarket market, TaskMarket.TaskParams calldata p) external payable returns (uint256) {
        return market.postTask{value: msg.value}(p, "ipfs://spec");
    }

    function cancel(TaskMarket market, uint256 taskId) external {
        market.cancel(taskId);
    }

    function withdraw(TaskMarket market) external {
        market.withdraw(address(0));
    }
}

/// @notice A client contract that re-enters withdraw when paid; the guard must stop the second call.
contract ReenteringClient {
    TaskMarket private _market;
    uint256 public reentryAttempts;
    bool public reentrySucceeded;

    function post(TaskMarket market, TaskMarket.TaskParams calldata p) external payable returns (uint256) {
        _market = market;
        return market.postTask{value: msg.value}(p, "ipfs://spec");
    }

    function cancel(uint256 taskId) external {
        _market.cancel(taskId);
    }

    function withdraw() external {
        _market.withdraw(address(0));
    }

    receive() external payable {
        ++reentryAttempts;
        try _market.withdraw(address(0)) {
            reentrySucceeded = true;
        } catch {}
    }
}

/// @notice A group member that is a contract refusing the native coin: its payout must become a
/// credit without blocking the other members' payouts.
contract RejectingMiner {
    function claim(TaskMarket market, uint256 taskId, address[] calldata group) external payable {
        market.claim{value: msg.value}(taskId, group);
    }

    function submit(TaskMarket market, uint256 taskId, bytes32 root, address[] calldata group, bytes[] calldata sigs)
        external
    {
        market.submitResult(taskId, root, "http://rejecting.example/result", group, sigs);
    }

    function withdraw(TaskMarket market) external {
        market.withdraw(address(0));
    }
}

/// @notice An ERC-20 with a blocklist on receiving (as some stablecoins have) and a 1% fee its
/// owner can switch on after a task was posted: a push to a blocked member must become a credit,
/// and a bond that arrives short must be refused.
contract HostileToken is ERC20 {
    mapping(address => bool) public blocked;
    bool public feeOn;

    constructor() ERC20("Hostile Token", "HST") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function setBlocked(address account, bool on) external {
        blocked[account] = on;
    }

    function setFee(bool on) external {
        feeOn = on;
    }

    function _update(address from, address to, uint256 value) internal override {
        require(!blocked[to], "HostileToken: blocked");
        if (feeOn && from != address(0) && to != address(0)) {
            uint256 fee = value / 100;
            super._update(from, address(0), fee);
            value -= fee;
        }
        super._update(from, to, value);
    }
}
