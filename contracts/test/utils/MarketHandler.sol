// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm} from "./Vm.sol";
import {TaskMarket} from "../../src/TaskMarket.sol";
import {MantaTestToken} from "../../src/MantaTestToken.sol";

/// @notice The actor forge drives in the invariant tests. Each action picks the rightful party
/// (client, member, leader, arbiter) and mirrors every successful settlement in a ghost ledger
/// of expected credits; `attack` makes a wrong party try a privileged call and counts successes.
contract MarketHandler {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);
    bytes32 internal constant ROOT = keccak256("handler result");

    TaskMarket public immutable market;
    MantaTestToken public immutable mtt;
    address public immutable arbiter;
    address[] public clients;
    address[] public miners;
    address[] public actors;
    mapping(address => uint256) internal _keyOf;

    uint256[] public taskIds;
    mapping(uint256 taskId => uint96[]) internal _shares;
    mapping(address account => mapping(address token => uint256)) public expectedCredit;
    uint256 public unauthorizedSuccesses;
    mapping(bytes4 => uint256) public successes;

    constructor(TaskMarket market_, MantaTestToken mtt_) {
        market = market_;
        mtt = mtt_;
        arbiter = _actor("arbiter", false);
        for (uint256 i; i < 2; ++i) {
            clients.push(_actor(string.concat("client", _digit(i)), true));
        }
        for (uint256 i; i < 4; ++i) {
            miners.push(_actor(string.concat("miner", _digit(i)), true));
        }
        actors.push(_actor("stranger", false));
    }

    function _digit(uint256 i) internal pure returns (string memory) {
        return string(abi.encodePacked(bytes1(uint8(48 + i))));
    }

    function _actor(string memory name, bool registered) internal returns (address account) {
        uint256 key = uint256(keccak256(abi.encode("handler", name)));
        account = vm.addr(key);
        _keyOf[account] = key;
        actors.push(account);
        vm.label(account, name);
        vm.deal(account, 1e30);
        mtt.mint(account, 1e30);
        vm.startPrank(account);
        mtt.approve(address(market), type(uint256).max);
        if (registered) market.register(string.concat("http://", name, ".example"));
        vm.stopPrank();
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function taskCount() external view returns (uint256) {
        return taskIds.length;
    }

    // ------------------------------------------------------------ rightful actions

    function post(uint256 seed, uint96 reward, uint96 bond, uint8 slots, bool useToken, uint32 claimWindow)
        external
    {
        address client = clients[seed % clients.length];
        address token = useToken ? address(mtt) : address(0);
        TaskMarket.TaskParams memory p = TaskMarket.TaskParams({
            token: token,
            reward: uint96(_bound(reward, 1, 1e24)),
            bond: uint96(_bound(bond, 0, 1e22)),
            slots: uint8(_bound(slots, 1, 3)),
            claimWindow: uint32(_bound(claimWindow, 1, 1 days)),
            workWindow: uint32(_bound(seed >> 8, 1, 1 days)),
            reviewWindow: uint32(_bound(seed >> 40, 1, 6 hours)),
            arbitrationWindow: uint32(_bound(seed >> 72, 1, 6 hours)),
            arbiter: arbiter,
            specHash: keccak256(abi.encode(seed)),
            validationHash: bytes32(seed)
        });
        vm.prank(client);
        uint256 taskId = market.postTask{value: useToken ? 0 : p.reward}(p, "ipfs://spec");
        taskIds.push(taskId);
        ++successes[this.post.selector];
    }

    /// @dev Tries the miners in turn from a random one, so that groups fill in a short sequence.
    function claim(uint256 taskSeed, uint256 minerSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        TaskMarket.TaskView memory t = market.getTask(taskId);
        for (uint256 i; i < miners.length; ++i) {
            address miner = miners[(minerSeed % miners.length + i) % miners.length];
            vm.prank(miner);
            try market.claim{value: t.token == address(0) ? t.bond : 0}(taskId) {
                ++successes[this.claim.selector];
                return;
            } catch {}
        }
    }

    function submit(uint256 taskSeed, uint256 splitSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        address[] memory group = market.membersOf(taskId);
        if (group.length == 0) return;
        uint96[] memory shares = _split(market.getTask(taskId).reward, group.length, splitSeed);
        bytes[] memory sigs = _signatures(taskId, group, shares);
        vm.prank(group[0]);
        try market.submitResult(taskId, ROOT, "uri", shares, sigs) {
            _shares[taskId] = shares;
            ++successes[this.submit.selector];
        } catch {}
    }

    function accept(uint256 taskSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        vm.prank(market.getTask(taskId).client);
        try market.accept(taskId) {
            _creditMiners(taskId);
            ++successes[this.accept.selector];
        } catch {}
    }

    function dispute(uint256 taskSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        vm.prank(market.getTask(taskId).client);
        try market.dispute(taskId, keccak256("reason")) {
            ++successes[this.dispute.selector];
        } catch {}
    }

    function resolve(uint256 taskSeed, bool minersWin) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        vm.prank(arbiter);
        try market.resolve(taskId, minersWin) {
            if (minersWin) _creditMiners(taskId);
            else _creditClientWithBonds(taskId);
            ++successes[this.resolve.selector];
        } catch {}
    }

    function finalize(uint256 taskSeed, uint256 callerSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        vm.prank(actors[callerSeed % actors.length]);
        try market.finalize(taskId) {
            _creditMiners(taskId);
            ++successes[this.finalize.selector];
        } catch {}
    }

    function expire(uint256 taskSeed, uint256 callerSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        TaskMarket.TaskView memory t = market.getTask(taskId);
        vm.prank(actors[callerSeed % actors.length]);
        try market.expire(taskId) {
            if (t.claimed == 0) expectedCredit[t.client][t.token] += t.reward;
            else _creditExpired(taskId);
            ++successes[this.expire.selector];
        } catch {}
    }

    function checkIn(uint256 taskSeed, uint256 memberSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        address[] memory group = market.membersOf(taskId);
        if (group.length == 0) return;
        vm.prank(group[memberSeed % group.length]);
        try market.checkIn(taskId) {
            ++successes[this.checkIn.selector];
        } catch {}
    }

    function cancel(uint256 taskSeed) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        TaskMarket.TaskView memory t = market.getTask(taskId);
        vm.prank(t.client);
        try market.cancel(taskId) {
            expectedCredit[t.client][t.token] += t.reward;
            ++successes[this.cancel.selector];
        } catch {}
    }

    function withdraw(uint256 actorSeed, bool useToken) external {
        address account = actors[actorSeed % actors.length];
        address token = useToken ? address(mtt) : address(0);
        uint256 before = token == address(0) ? account.balance : mtt.balanceOf(account);
        vm.prank(account);
        try market.withdraw(token) {
            uint256 received = (token == address(0) ? account.balance : mtt.balanceOf(account)) - before;
            if (received != expectedCredit[account][token]) ++unauthorizedSuccesses;
            expectedCredit[account][token] = 0;
            ++successes[this.withdraw.selector];
        } catch {
            if (expectedCredit[account][token] != 0) ++unauthorizedSuccesses; // a rightful withdraw failed
        }
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + _bound(seconds_, 0, 1 days));
    }

    // ------------------------------------------------------------ wrong parties

    /// @dev A party without the right tries one privileged call; any success is a breach.
    function attack(uint256 taskSeed, uint256 actorSeed, uint8 action) external {
        uint256 taskId = _pick(taskSeed);
        if (taskId == 0) return;
        TaskMarket.TaskView memory t = market.getTask(taskId);
        address[] memory group = market.membersOf(taskId);
        address intruder = actors[actorSeed % actors.length];
        bytes memory data;
        action = action % 6;
        if (action == 0 && intruder != t.client) data = abi.encodeCall(TaskMarket.accept, (taskId));
        else if (action == 1 && intruder != t.client) data = abi.encodeCall(TaskMarket.dispute, (taskId, 0));
        else if (action == 2 && intruder != t.client) data = abi.encodeCall(TaskMarket.cancel, (taskId));
        else if (action == 3 && intruder != arbiter) data = abi.encodeCall(TaskMarket.resolve, (taskId, actorSeed % 2 == 0));
        else if (action == 4 && group.length != 0 && intruder != group[0]) data = _submitCall(taskId, group, actorSeed);
        else if (action == 5 && (intruder == t.client || intruder == arbiter)) data = abi.encodeCall(TaskMarket.claim, (taskId));
        else return;
        uint256 value = action == 5 && t.token == address(0) ? t.bond : 0;
        vm.prank(intruder);
        (bool ok,) = address(market).call{value: value}(data);
        if (ok) ++unauthorizedSuccesses;
    }

    function _submitCall(uint256 taskId, address[] memory group, uint256 seed) internal view returns (bytes memory) {
        uint96[] memory shares = _split(market.getTask(taskId).reward, group.length, seed);
        bytes[] memory sigs = _signatures(taskId, group, shares);
        return abi.encodeCall(TaskMarket.submitResult, (taskId, ROOT, "", shares, sigs));
    }

    // ------------------------------------------------------------ ghost ledger

    function _creditMiners(uint256 taskId) internal {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        address[] memory group = market.membersOf(taskId);
        uint96[] storage shares = _shares[taskId];
        for (uint256 i; i < group.length; ++i) {
            expectedCredit[group[i]][t.token] += uint256(shares[i]) + t.bond;
        }
    }

    function _creditClientWithBonds(uint256 taskId) internal {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        expectedCredit[t.client][t.token] += uint256(t.reward) + uint256(t.bond) * t.claimed;
    }

    /// @dev An expired RUNNING task: members who checked in get their bond back unless all
    /// did, the client the reward and the other bonds.
    function _creditExpired(uint256 taskId) internal {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        address[] memory group = market.membersOf(taskId);
        uint256 toClient = t.reward;
        uint256 present;
        for (uint256 i; i < group.length; ++i) {
            if (market.isCheckedIn(taskId, group[i])) ++present;
        }
        for (uint256 i; i < group.length; ++i) {
            bool spared = present < group.length && market.isCheckedIn(taskId, group[i]);
            if (spared) expectedCredit[group[i]][t.token] += t.bond;
            else toClient += t.bond;
        }
        expectedCredit[t.client][t.token] += toClient;
    }

    // ------------------------------------------------------------ helpers

    function _pick(uint256 seed) internal view returns (uint256) {
        uint256 n = taskIds.length;
        if (n == 0) return 0;
        // Half the picks go to the newest task, so that one task often runs its whole course.
        return seed % 2 == 0 ? taskIds[n - 1] : taskIds[(seed >> 1) % n];
    }

    function _bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        return min + (x % (max - min + 1));
    }

    function _split(uint256 reward, uint256 n, uint256 seed) internal pure returns (uint96[] memory shares) {
        shares = new uint96[](n);
        uint256 left = reward;
        for (uint256 i; i + 1 < n; ++i) {
            uint256 share = uint256(keccak256(abi.encode(seed, i))) % (left + 1);
            shares[i] = uint96(share);
            left -= share;
        }
        shares[n - 1] = uint96(left);
    }

    function _signatures(uint256 taskId, address[] memory group, uint96[] memory shares)
        internal
        view
        returns (bytes[] memory sigs)
    {
        bytes32 digest = market.resultDigest(taskId, ROOT, shares);
        sigs = new bytes[](group.length);
        for (uint256 i; i < group.length; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(_keyOf[group[i]], digest);
            sigs[i] = abi.encodePacked(r, s, v);
        }
    }
}
