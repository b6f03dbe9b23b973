// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/**
 * @title MantaTestToken
 * @notice An 18-decimal ERC-20 (symbol MTT) for devnets and tests; anyone may mint, which is
 * what a dev faucet needs and why it must never be deployed where it could pass for value.
 */
contract MantaTestToken is ERC20 {
    constructor() ERC20("MANTA Test Token", "MTT") {}

    /// @notice Mints `amount` to `to`; open to everyone on purpose (faucet).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
