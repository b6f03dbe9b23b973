// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm} from "./Vm.sol";
import {TaskMarket} from "../../src/TaskMarket.sol";
import {MantaTestToken} from "../../src/MantaTestToken.sol";

/// @notice The actor forge drives in the invariant tests. Every action picks a live task in a
/// state where it can succeed (warping past a deadline when it needs to) and the rightful party;
/// successes are counted per action so the suite can prove it reached every state.
///
/// The cast: one client; its puppet (a second address that claims slots); an honest arbiter and
/// a colluding one (who always rules for the client); four honest miners, who claim only tasks
/// whose arbiter is the honest one (their daemons' allowlist), always sign, check in while they
/// work, and answer a result that left them out before its settle deadline; and a saboteur that
/// claims anything and never signs. Honest members "are always online": before any action moves
/// time past a deadline, they act as their protocol says.
contract MarketHandler {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);
    bytes32 internal constant ROOT = keccak256("handler result");
    bytes32 internal constant EVIDENCE = keccak256("handler checkpoint");
    uint256 internal constant INITIAL = 1e30;
    /// @dev Tasks per run: enough for every state at once, few enough that the per-call scans
    /// (the invariants read every task) keep the suite fast.
    uint256 internal constant MAX_TASKS = 24;

    TaskMarket public immutable market;
    MantaTestToken public immutable mtt;
    address public immutable client;
    address public immutable puppet;
    address public immutable arbiter;
    address public immutable colluder;
    address public immutable saboteur;
    address[] public honest;
    address[] public actors;
    mapping(address => uint256) internal _keyOf;
    mapping(address => bool) public isHonest;

    uint256[] public taskIds; // live: not yet final for everyone (what actions pick from)
    uint256[] public doneIds; // final: cancelled, expired, or settled with nothing left to claim
    mapping(uint256 taskId => address[]) internal _group;
    mapping(uint256 taskId => bool) public ghostTerminal;
    mapping(uint256 taskId => TaskMarket.State) public ghostState;

    mapping(bytes32 action => uint256) public successes;
    uint256 public calls;

    constructor(TaskMarket market_, MantaTestToken mtt_) {
        market = market_;
        mtt = mtt_;
        client = _actor("client");
        puppet = _actor("puppet");
        arbiter = _actor("arbiter");
        colluder = _actor("colluding arbiter");
        saboteur = _actor("saboteur");
        for (uint256 i; i < 4; ++i) {
            address m = _actor(string.concat("honest", vm.toString(i)));
            honest.push(m);
            isHonest[m] = true;
        }
    }

    function _actor(string memory name) internal returns (address account) {
        uint256 key = uint256(keccak256(abi.encode("handler", name)));
        account = vm.addr(key);
        _keyOf[account] = key;
        actors.push(account);
        vm.label(account, name);
        vm.deal(account, INITIAL);
        mtt.mint(account, INITIAL);
        vm.prank(account);
        mtt.approve(address(market), type(uint256).max);
    }

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function honestCount() external view returns (uint256) {
        return honest.length;
    }

    function taskCount() external view returns (uint256) {
        return taskIds.length;
    }

    function groupOf(uint256 taskId) external view returns (address[] memory) {
        return _group[taskId];
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + x % (hi - lo + 1);
    }

    /// @dev Every action starts here: counts the call, and retires the tasks that became final
    /// (so the per-call scans stay short while a run keeps creating tasks).
    function _begin() internal {
        ++calls;
        uint256 k;
        while (k < taskIds.length) {
            uint256 taskId = taskIds[k];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            bool final_ = t.state == TaskMarket.State.Cancelled || t.state == TaskMarket.State.Expired
                || (t.state == TaskMarket.State.Settled && t.closed);
            if (!final_) {
                ++k;
                continue;
            }
            ghostTerminal[taskId] = true;
            ghostState[taskId] = t.state;
            doneIds.push(taskId);
            taskIds[k] = taskIds[taskIds.length - 1];
            taskIds.pop();
        }
    }

    function doneCount() external view returns (uint256) {
        return doneIds.length;
    }

    function _count(string memory action) internal {
        ++successes[keccak256(bytes(action))];
    }

    function _now() internal view returns (uint256) {
        return block.timestamp;
    }

    // ------------------------------------------------------------ picking

    /// @dev The first task, starting at a random index, whose effective state is `state` and
    /// whose window for acting in that state is still open (`open`), or any such task (!open).
    function _find(uint256 seed, TaskMarket.State state, bool open) internal view returns (bool found, uint256 taskId) {
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            taskId = taskIds[(seed + k) % n];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.state != state) continue;
            if (!open) return (true, taskId);
            uint256 deadline = state == TaskMarket.State.Open
                ? t.claimDeadline
                : state == TaskMarket.State.Running ? t.workDeadline : t.settleDeadline;
            if (_now() <= deadline) return (true, taskId);
        }
    }

    /// @dev A task in `state` (inside its window when `open`): an existing one, or, when none
    /// exists and the run has room, a new one driven there (posted under the honest arbiter,
    /// unless `colluding`, and filled by honest members, or by the hostile two when colluding).
    function _pick(uint256 seed, TaskMarket.State state, bool open) internal returns (bool found, uint256 taskId) {
        (found, taskId) = _find(seed, state, open);
        if (found || taskIds.length >= MAX_TASKS) return (found, taskId);
        return (true, _drive(seed, state, false));
    }

    function _pick(uint256 seed, TaskMarket.State state) internal returns (bool found, uint256 taskId) {
        return _pick(seed, state, true);
    }

    function _drive(uint256 seed, TaskMarket.State state, bool colluding) internal returns (uint256 taskId) {
        taskId = _post(seed, uint96(_bound(seed, 1e15, 1e20)), 2, seed % 2 == 0, colluding);
        if (state == TaskMarket.State.Open) return taskId;
        address[2] memory members = colluding ? [puppet, saboteur] : [honest[seed % 4], honest[(seed + 1) % 4]];
        TaskMarket.TaskView memory t = market.getTask(taskId);
        for (uint256 i; i < 2; ++i) {
            vm.prank(members[i]);
            market.claim{value: t.token == address(0) ? t.bond : 0}(taskId, _group[taskId]);
            _group[taskId].push(members[i]);
        }
        if (state == TaskMarket.State.Running) return taskId;
        address[] memory g = _group[taskId];
        bytes[] memory sigs = new bytes[](2);
        sigs[1] = _sign(_keyOf[g[1]], market.resultDigest(taskId, ROOT));
        vm.prank(g[0]);
        market.submitResult(taskId, ROOT, "handler://result", g, sigs);
        if (state == TaskMarket.State.Submitted) return taskId;
        vm.prank(client);
        market.dispute(taskId, keccak256("handler reason"));
    }

    function _memberIndex(uint256 taskId, address who) internal view returns (uint256) {
        address[] storage g = _group[taskId];
        for (uint256 i; i < g.length; ++i) {
            if (g[i] == who) return i;
        }
        return type(uint256).max;
    }

    // ------------------------------------------------------------ the honest protocol

    /// @dev Before time passes a task's work or settle deadline: honest members check in while it
    /// runs, and answer a result that left them out (they endorse it: it is the group's result).
    function _honestAct(uint256 taskId) internal {
        TaskMarket.TaskView memory t = market.getTask(taskId);
        if (t.state == TaskMarket.State.Running && _now() > t.workDeadline) return;
        address[] memory g = _group[taskId];
        for (uint256 i; i < g.length; ++i) {
            if (!isHonest[g[i]]) continue;
            uint256 bit = uint256(1) << i;
            if (t.state == TaskMarket.State.Running && t.presentSlots & bit == 0) {
                vm.prank(g[i]);
                market.checkIn(taskId, g, EVIDENCE);
            } else if (t.signedSlots & bit == 0 && _lateOpen(t) && _now() <= t.settleDeadline) {
                vm.prank(g[i]);
                market.endorse(taskId, g);
                _count("endorse");
            }
        }
    }

    function _lateOpen(TaskMarket.TaskView memory t) internal pure returns (bool) {
        return t.state == TaskMarket.State.Submitted || t.state == TaskMarket.State.Disputed
            || (t.state == TaskMarket.State.Settled && t.minersPaid && !t.closed);
    }

    function _warpPast(uint256, uint256 deadline) internal {
        if (_now() <= deadline) _warpTo(deadline + 1);
    }

    /// @dev Moves time to `target` one deadline at a time, letting the honest members act at
    /// each: they never sleep through a deadline (an implicit start counts: once a claim window
    /// ends, the partial group's members check in).
    function _warpTo(uint256 target) internal {
        while (true) {
            (uint256 next, bool found) = _nextStop(target);
            if (!found) break;
            vm.warp(next);
            _honestActAll();
        }
        vm.warp(target);
    }

    /// @dev The earliest moment in (now, target) when honest members must act: the second after
    /// a claim deadline of a task with claims, or a work or settle deadline itself.
    function _nextStop(uint256 target) internal view returns (uint256 next, bool found) {
        next = target;
        for (uint256 k; k < taskIds.length; ++k) {
            TaskMarket.TaskView memory t = market.getTask(taskIds[k]);
            uint256 at;
            if (t.state == TaskMarket.State.Open && t.claimed != 0) at = uint256(t.claimDeadline) + 1;
            else if (t.state == TaskMarket.State.Running) at = t.workDeadline;
            else if (_lateOpen(t)) at = t.settleDeadline;
            else continue;
            if (at > _now() && at < next) (next, found) = (at, true);
        }
    }

    function _honestActAll() internal {
        for (uint256 k; k < taskIds.length; ++k) {
            _honestAct(taskIds[k]);
        }
    }

    // ------------------------------------------------------------ actions

    function post(uint256 seed, uint96 reward, uint8 slots, bool useToken, bool colluding) external {
        _begin();
        if (taskIds.length >= MAX_TASKS) return;
        _post(seed, reward, uint8(_bound(slots, 1, 4)), useToken, colluding);
    }

    function _post(uint256 seed, uint96 reward, uint8 n, bool useToken, bool colluding)
        internal
        returns (uint256 taskId)
    {
        address token = useToken ? address(mtt) : address(0);
        uint96 r = uint96(_bound(reward, 1, 1e24));
        uint96 bond = uint96((uint256(r) + 100 * uint256(n) - 1) / (100 * uint256(n)) + seed % 1e18);
        TaskMarket.TaskParams memory p = TaskMarket.TaskParams({
            token: token,
            reward: r,
            bond: bond,
            slots: n,
            claimWindow: uint32(_bound(seed, 1 hours, 1 days)),
            workWindow: uint32(_bound(seed >> 8, 1 hours, 1 days)),
            reviewWindow: uint32(_bound(seed >> 16, 1 hours, 1 days)),
            arbitrationWindow: uint32(_bound(seed >> 24, 1 hours, 1 days)),
            arbiter: colluding ? colluder : arbiter,
            specHash: keccak256(abi.encode(seed)),
            validationHash: bytes32(0)
        });
        vm.prank(client);
        taskId = market.postTask{value: useToken ? 0 : r}(p, "handler://spec");
        taskIds.push(taskId);
        _count("post");
    }

    function claim(uint256 seed, uint256 who) external {
        _begin();
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = taskIds[(seed + k) % n];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.state != TaskMarket.State.Open || _now() > t.claimDeadline) continue;
            address miner = _claimant(t, taskId, who);
            if (miner == address(0)) continue;
            _claimAs(taskId, t, miner);
            return;
        }
        if (n >= MAX_TASKS) return;
        uint256 fresh = _drive(seed, TaskMarket.State.Open, false); // none open: post one
        _claimAs(fresh, market.getTask(fresh), honest[who % 4]);
    }

    function _claimAs(uint256 taskId, TaskMarket.TaskView memory t, address miner) internal {
        vm.prank(miner);
        market.claim{value: t.token == address(0) ? t.bond : 0}(taskId, _group[taskId]);
        _group[taskId].push(miner);
        _count("claim");
    }

    /// @dev An account that may claim: honest miners only under the honest arbiter.
    function _claimant(TaskMarket.TaskView memory t, uint256 taskId, uint256 who) internal view returns (address) {
        address[6] memory candidates = [honest[0], honest[1], honest[2], honest[3], puppet, saboteur];
        for (uint256 k; k < 6; ++k) {
            address c = candidates[(who + k) % 6];
            if (isHonest[c] && t.arbiter != arbiter) continue;
            if (_memberIndex(taskId, c) == type(uint256).max) return c;
        }
        return address(0);
    }

    /// @dev Any member with a majority submits. Usually honest members sign, the puppet
    /// sometimes and the saboteur never; one time in three the puppet and the saboteur collude
    /// and leave the honest members out (they then endorse before the settle deadline).
    function submit(uint256 seed) external {
        _begin();
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = taskIds[(seed + k) % n];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.state == TaskMarket.State.Running && _now() <= t.workDeadline && _submit(taskId, seed)) return;
        }
    }

    function _submit(uint256 taskId, uint256 seed) internal returns (bool) {
        address[] memory g = _group[taskId];
        bool exclude = seed % 3 == 0;
        uint256 mask;
        for (uint256 i; i < g.length; ++i) {
            bool hostile = g[i] == puppet || g[i] == saboteur;
            bool signs = exclude ? hostile : isHonest[g[i]] || (g[i] == puppet && seed % 2 == 0);
            if (signs) mask |= uint256(1) << i;
        }
        uint256 count;
        for (uint256 m = mask; m != 0; m &= m - 1) {
            ++count;
        }
        if (count < g.length / 2 + 1) return false; // no quorum: the group cannot submit
        uint256 by = _firstBit(mask, seed % g.length);
        bytes[] memory sigs = new bytes[](g.length);
        bytes32 digest = market.resultDigest(taskId, ROOT);
        for (uint256 i; i < g.length; ++i) {
            if (mask & (uint256(1) << i) != 0 && i != by) sigs[i] = _sign(_keyOf[g[i]], digest);
        }
        vm.prank(g[by]);
        market.submitResult(taskId, ROOT, "handler://result", g, sigs);
        _count(exclude ? "submit(excluding honest)" : "submit");
        return true;
    }

    function _firstBit(uint256 mask, uint256 start) internal pure returns (uint256) {
        for (uint256 k; k < 32; ++k) {
            uint256 i = (start + k) % 32;
            if (mask & (uint256(1) << i) != 0) return i;
        }
        return 0;
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function accept(uint256 seed) external {
        _begin();
        (bool found, uint256 taskId) = _pick(seed, TaskMarket.State.Submitted);
        if (!found) return;
        vm.prank(client);
        market.accept(taskId, _group[taskId]);
        _count("accept");
    }

    function dispute(uint256 seed) external {
        _begin();
        (bool found, uint256 taskId) = _pick(seed, TaskMarket.State.Submitted);
        if (!found) return;
        vm.prank(client);
        market.dispute(taskId, keccak256("handler reason"));
        _count("dispute");
    }

    /// @dev The honest arbiter rules for the (honest) result; the colluding one for the client.
    function resolve(uint256 seed, bool colluding) external {
        _begin();
        address judge = colluding ? colluder : arbiter;
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = taskIds[(seed + k) % n];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.state == TaskMarket.State.Disputed && t.arbiter == judge && _now() <= t.settleDeadline) {
                _resolve(taskId, judge);
                return;
            }
        }
        if (n < MAX_TASKS) _resolve(_drive(seed, TaskMarket.State.Disputed, colluding), judge);
    }

    function _resolve(uint256 taskId, address judge) internal {
        vm.prank(judge);
        market.resolve(taskId, judge == arbiter, _group[taskId]);
        _count(judge == arbiter ? "resolve(miners)" : "resolve(client)");
    }

    function finalize(uint256 seed, bool disputed) external {
        _begin();
        (bool found, uint256 taskId) =
            _pick(seed, disputed ? TaskMarket.State.Disputed : TaskMarket.State.Submitted, false);
        if (!found) return;
        _warpPast(taskId, market.getTask(taskId).settleDeadline);
        market.finalize(taskId, _group[taskId]);
        _count("finalize");
    }

    function expire(uint256 seed, bool running) external {
        _begin();
        (bool found, uint256 taskId) = _pick(seed, running ? TaskMarket.State.Running : TaskMarket.State.Open, false);
        if (!found) return;
        TaskMarket.TaskView memory t = market.getTask(taskId);
        if (!running && t.claimed != 0) return; // would start implicitly, not expire
        _warpPast(taskId, running ? t.workDeadline : t.claimDeadline);
        market.expire(taskId, _group[taskId]);
        _count(running ? "expire(running)" : "expire(open)");
    }

    function cancel(uint256 seed) external {
        _begin();
        (bool found, uint256 taskId) = _pick(seed, TaskMarket.State.Open);
        if (!found || market.getTask(taskId).claimed != 0) return;
        vm.prank(client);
        market.cancel(taskId);
        _count("cancel");
    }

    /// @dev The puppet or the saboteur checks in (present, not working): it keeps its bond and
    /// earns nothing.
    function hostileCheckIn(uint256 seed, bool byPuppet) external {
        _begin();
        address who = byPuppet ? puppet : saboteur;
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = taskIds[(seed + k) % n];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            uint256 i = _memberIndex(taskId, who);
            // (a task of the hostile two, when none is running)
            if (t.state != TaskMarket.State.Running || _now() > t.workDeadline || i == type(uint256).max) continue;
            if (t.presentSlots & (uint256(1) << i) != 0) continue;
            _hostileCheckIn(taskId, who);
            return;
        }
        if (n < MAX_TASKS) _hostileCheckIn(_drive(seed, TaskMarket.State.Running, true), who);
    }

    function _hostileCheckIn(uint256 taskId, address who) internal {
        vm.prank(who);
        market.checkIn(taskId, _group[taskId], EVIDENCE);
        _count("checkIn(hostile)");
    }

    function honestCheckIn(uint256 seed) external {
        _begin();
        (bool found, uint256 taskId) = _pick(seed, TaskMarket.State.Running);
        if (!found) return;
        _honestAct(taskId);
        _count("checkIn(honest)");
    }

    function sweep(uint256 seed) external {
        _begin();
        uint256 n = taskIds.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = taskIds[(seed + k) % n];
            TaskMarket.TaskView memory t = market.getTask(taskId);
            if (t.state != TaskMarket.State.Settled || t.closed) continue;
            _warpPast(taskId, t.settleDeadline);
            market.sweep(taskId, _group[taskId]);
            _count("sweep");
            return;
        }
    }

    function warp(uint32 seconds_) external {
        _begin();
        _warpTo(_now() + _bound(seconds_, 1, 12 hours));
        _count("warp");
    }

    /// @dev A whole lifecycle in one action: post under the honest arbiter, two honest members
    /// and the saboteur claim, the honest two submit, the client accepts, the sweep closes it.
    function lifecycle(uint256 seed) external {
        _begin();
        if (taskIds.length >= MAX_TASKS) return;
        uint256 taskId = _post(seed, uint96(_bound(seed, 1e15, 1e20)), 3, seed % 3 == 0, false);
        address[3] memory members = [honest[seed % 4], honest[(seed + 1) % 4], saboteur];
        TaskMarket.TaskView memory t = market.getTask(taskId);
        for (uint256 i; i < 3; ++i) {
            vm.prank(members[i]);
            market.claim{value: t.token == address(0) ? t.bond : 0}(taskId, _group[taskId]);
            _group[taskId].push(members[i]);
        }
        if (!_submit(taskId, (seed % 1e9) * 3 + 1)) return; // not excluding: the honest two sign
        vm.prank(client);
        market.accept(taskId, _group[taskId]);
        _warpPast(taskId, market.getTask(taskId).settleDeadline);
        market.sweep(taskId, _group[taskId]);
        _count("lifecycle");
    }

    /// @dev The reverse attack in one action: under the honest arbiter, one honest member and the
    /// client's puppet and the saboteur (a hostile majority) claim; the hostile two submit without
    /// the honest member and the client accepts at once. The honest member answers (endorses)
    /// before the settle deadline, when time next moves.
    function hostileTakeover(uint256 seed) external {
        _begin();
        if (taskIds.length >= MAX_TASKS) return;
        uint256 taskId = _post(seed, uint96(_bound(seed, 1e15, 1e20)), 3, seed % 2 == 0, false);
        address[3] memory members = [honest[seed % 4], puppet, saboteur];
        TaskMarket.TaskView memory t = market.getTask(taskId);
        for (uint256 i; i < 3; ++i) {
            vm.prank(members[i]);
            market.claim{value: t.token == address(0) ? t.bond : 0}(taskId, _group[taskId]);
            _group[taskId].push(members[i]);
        }
        require(_submit(taskId, (seed % 1e9) * 3), "the hostile two are a majority");
        vm.prank(client);
        market.accept(taskId, _group[taskId]);
        _count("takeover");
    }

    /// @dev Wrong parties try privileged calls; every one must fail.
    function attack(uint256 seed) external {
        _begin();
        if (taskIds.length == 0) return;
        uint256 taskId = taskIds[seed % taskIds.length];
        address[] memory g = _group[taskId];
        vm.prank(saboteur);
        (bool ok,) = address(market).call(abi.encodeCall(TaskMarket.accept, (taskId, g)));
        vm.prank(puppet);
        (bool ok2,) = address(market).call(abi.encodeCall(TaskMarket.resolve, (taskId, false, g)));
        vm.prank(client);
        (bool ok3,) = address(market).call(abi.encodeCall(TaskMarket.endorse, (taskId, g)));
        require(!ok && !ok2 && !ok3, "a wrong party succeeded");
        _count("attack");
    }
}
