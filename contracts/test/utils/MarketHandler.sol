// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {Vm} from "./Vm.sol";
import {TaskMarket} from "../../src/TaskMarket.sol";
import {MantaTestToken} from "../../src/MantaTestToken.sol";

/// @notice The actor forge drives in the invariant suite (TaskMarketInvariant.t.sol).
///
/// Every action finds a live task in a state where it can succeed, or drives a new one there,
/// warping past a deadline when it needs to; the suite runs with fail_on_revert, so an action
/// that reverts fails the suite. Successes are counted per action.
///
/// The cast: a client and its three puppets (second addresses that claim slots); an honest
/// arbiter (rules for the miners on the honest result, for the client on a hostile one) and a
/// colluding arbiter (always rules for the client); a saboteur that claims anything and never
/// signs nor checks in; four honest miners. Honest miners follow the protocol: they claim only
/// tasks under the honest arbiter (their daemon's allowlist), sign the honest result, check in
/// while they work, and when left out of a result answer by its settle deadline (endorse the
/// honest result; check in otherwise). They never sleep through a deadline: time only moves
/// through `_warpTo`, which stops at every moment an honest member must act.
///
/// Every market call that can move money is made through `_call`, which records, per task and
/// per actor, what the actor's wallet and credit gained or lost, and what the call burned: the
/// per-task ledger the invariants check against the contract. Forge discards whatever an
/// invariant function writes, so all the bookkeeping (terminal states first seen, retirement of
/// final tasks, credits) happens here, in the actions. When MAX_LIVE tasks are live, an action
/// that needs a new task first closes the oldest one the legitimate way (`_makeRoom`).
contract MarketHandler {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);
    bytes32 public constant ROOT = keccak256("honest result");
    bytes32 public constant GARBAGE = keccak256("hostile result");
    bytes32 internal constant EVIDENCE = keccak256("handler checkpoint");
    uint256 public constant INITIAL = 1e30;
    /// @dev Live tasks at a time (the closed ones retire from the scans): enough for every state
    /// at once, few enough that the scans and the per-call checks stay cheap.
    uint256 public constant MAX_LIVE = 8;

    // ------------------------------------------------------------ actions (success counters)

    uint256 public constant POST = 0;
    uint256 public constant CLAIM = 1;
    uint256 public constant SUBMIT = 2;
    uint256 public constant SUBMIT_HOSTILE = 3;
    uint256 public constant ACCEPT = 4;
    uint256 public constant DISPUTE = 5;
    uint256 public constant RESOLVE_MINERS = 6;
    uint256 public constant RESOLVE_CLIENT = 7;
    uint256 public constant RESOLVE_COLLUDING = 8;
    uint256 public constant FINALIZE_REVIEW = 9;
    uint256 public constant FINALIZE_SILENT_ARBITER = 10;
    uint256 public constant EXPIRE_OPEN = 11;
    uint256 public constant EXPIRE_RUNNING = 12;
    uint256 public constant CANCEL = 13;
    uint256 public constant CHECKIN_HONEST = 14;
    uint256 public constant CHECKIN_HOSTILE = 15;
    uint256 public constant ENDORSE_LATE = 16;
    uint256 public constant CHECKIN_LATE = 17;
    uint256 public constant SWEEP = 18;
    uint256 public constant WARP = 19;
    uint256 public constant LIFECYCLE = 20;
    uint256 public constant TAKEOVER = 21;
    uint256 public constant ATTACK = 22;
    uint256 public constant ACTIONS = 23;

    function actionName(uint256 a) public pure returns (string memory) {
        string[23] memory names = [
            "post",
            "claim",
            "submit(honest majority)",
            "submit(puppet majority)",
            "accept",
            "dispute",
            "resolve(miners win)",
            "resolve(client wins, honest arbiter)",
            "resolve(client wins, colluding arbiter)",
            "finalize(after review)",
            "finalize(silent arbiter)",
            "expire(open)",
            "expire(running)",
            "cancel",
            "checkIn(honest, running)",
            "checkIn(puppet)",
            "endorse(honest, left out)",
            "checkIn(honest, left out)",
            "sweep",
            "warp",
            "lifecycle",
            "takeover(puppet majority + accept)",
            "attack(wrong parties refused)"
        ];
        return names[a];
    }

    uint256[23] public successes;
    uint256 public calls;
    /// @dev Set by the suite's afterInvariant: drive a fresh task even past MAX_LIVE.
    bool public forcing;

    // ------------------------------------------------------------ the cast

    TaskMarket public immutable market;
    MantaTestToken public immutable mtt;
    address public immutable client;
    address public immutable arbiter;
    address public immutable colluder;
    address public immutable saboteur;
    address[3] public puppets;
    address[4] public honest;
    address[] public actors;
    mapping(address => uint256) internal _keyOf;
    mapping(address => bool) public isHonest;
    mapping(address => bool) public isPuppet;

    // ------------------------------------------------------------ ghost state

    uint256[] public taskIds;
    /// @dev The tasks not yet retired: a task retires at the start of the action after the one
    /// that made it final (the suite has checked its final ledger by then); scans skip retired ones.
    uint256[] public live;
    uint256[] public retired;
    mapping(uint256 taskId => uint256) internal _livePosition; // index + 1
    mapping(address token => uint256) public retiredBurned;
    mapping(address token => uint256) public creditSum;
    mapping(address token => mapping(address => uint256)) internal _creditOf;
    uint256[] internal _pending;
    mapping(uint256 taskId => bool) internal _queued;
    mapping(uint256 taskId => address[]) internal _group;
    mapping(uint256 taskId => address) public tokenOf;
    mapping(uint256 taskId => bytes32) public rootOf;
    /// @dev What each actor's wallet plus credit gained (or lost) through calls on the task.
    mapping(uint256 taskId => mapping(address => int256)) public netOf;
    /// @dev The sum of netOf over the tracked actors (see `_tracked`).
    mapping(uint256 taskId => int256) public flowOf;
    mapping(uint256 taskId => uint256) public burnedBy;
    mapping(uint256 taskId => bool) public ghostTerminal;
    mapping(uint256 taskId => TaskMarket.State) public ghostState;

    constructor(TaskMarket market_, MantaTestToken mtt_) {
        market = market_;
        mtt = mtt_;
        client = _actor("client");
        arbiter = _actor("arbiter");
        colluder = _actor("colluding arbiter");
        saboteur = _actor("saboteur");
        for (uint256 i; i < 3; ++i) {
            puppets[i] = _actor(string.concat("puppet", vm.toString(i)));
            isPuppet[puppets[i]] = true;
        }
        for (uint256 i; i < 4; ++i) {
            honest[i] = _actor(string.concat("honest", vm.toString(i)));
            isHonest[honest[i]] = true;
        }
    }

    function _actor(string memory name) internal returns (address account) {
        uint256 key = uint256(keccak256(abi.encode("market handler", name)));
        account = vm.addr(key);
        _keyOf[account] = key;
        actors.push(account);
        vm.label(account, name);
        vm.deal(account, INITIAL);
        mtt.mint(account, INITIAL);
        vm.prank(account);
        mtt.approve(address(market), type(uint256).max);
    }

    // ------------------------------------------------------------ views for the suite

    function actorCount() external view returns (uint256) {
        return actors.length;
    }

    function taskCount() external view returns (uint256) {
        return taskIds.length;
    }

    function liveCount() external view returns (uint256) {
        return live.length;
    }

    function retiredCount() external view returns (uint256) {
        return retired.length;
    }

    /// @notice `count` retired tasks, rotating with the calls, with the terminal state each
    /// first reached (the suite checks they stay there).
    function retiredSample(uint256 count)
        external
        view
        returns (uint256[] memory ids, TaskMarket.State[] memory states)
    {
        uint256 n = retired.length;
        if (count > n) count = n;
        ids = new uint256[](count);
        states = new TaskMarket.State[](count);
        for (uint256 i; i < count; ++i) {
            ids[i] = retired[(calls * count + i) % n];
            states[i] = ghostState[ids[i]];
        }
    }

    /// @notice What retired tasks burned in `token`, and every actor's credit in it as of the
    /// last call that could change one (read by `_call` around each market call).
    function books(address token) external view returns (uint256 burnedByRetired, uint256 credits) {
        return (retiredBurned[token], creditSum[token]);
    }

    /// @dev Forge discards what an invariant function writes, so the handler keeps the books: a
    /// task whose call made it final (cancelled, expired, or settled and closed) retires at the
    /// start of the next action, after the suite checked it once in its final state.
    function _retirePending() internal {
        for (uint256 k; k < _pending.length; ++k) {
            uint256 taskId = _pending[k];
            uint256 position = _livePosition[taskId];
            uint256 last = live[live.length - 1];
            live[position - 1] = last;
            _livePosition[last] = position;
            live.pop();
            delete _livePosition[taskId];
            retired.push(taskId);
            retiredBurned[tokenOf[taskId]] += burnedBy[taskId];
        }
        delete _pending;
    }

    /// @dev After a call on a task: record a terminal state the first time, queue a final task.
    function _book(uint256 taskId) internal {
        TaskMarket.TaskView memory t = _task(taskId);
        TaskMarket.State s = t.state;
        bool terminal = s == TaskMarket.State.Settled || s == TaskMarket.State.Cancelled || s == TaskMarket.State.Expired;
        if (terminal && !ghostTerminal[taskId]) {
            ghostTerminal[taskId] = true;
            ghostState[taskId] = s;
        }
        if ((terminal && s != TaskMarket.State.Settled) || (s == TaskMarket.State.Settled && t.closed)) {
            if (!_queued[taskId]) {
                _queued[taskId] = true;
                _pending.push(taskId);
            }
        }
    }

    modifier step() {
        ++calls;
        _retirePending();
        _;
    }

    function groupOf(uint256 taskId) external view returns (address[] memory) {
        return _group[taskId];
    }

    /// @notice The handler's record of a task, in one call: the group in slot order, what the
    /// task moved (net flow to the actors, burn), what the client side (client and puppets), the
    /// two arbiters and each member gained, and the terminal state first seen.
    struct Ledger {
        uint256 taskId;
        address token;
        address[] group;
        bool[] honestMember;
        int256 flow;
        uint256 burned;
        int256 clientSide;
        int256 arbiterNet;
        int256 colluderNet;
        int256[] memberNet;
        bool terminal;
        TaskMarket.State terminalState;
    }

    /// @notice The ledgers of every live task (one call: the suite checks them after each call).
    function ledgers() external view returns (Ledger[] memory ls) {
        ls = new Ledger[](live.length);
        for (uint256 k; k < live.length; ++k) {
            ls[k] = _ledger(live[k]);
        }
    }

    function _ledger(uint256 taskId) internal view returns (Ledger memory l) {
        l.taskId = taskId;
        l.token = tokenOf[taskId];
        l.group = _group[taskId];
        l.honestMember = new bool[](l.group.length);
        l.flow = flowOf[taskId];
        l.burned = burnedBy[taskId];
        mapping(address => int256) storage net = netOf[taskId];
        l.clientSide = net[client] + net[puppets[0]] + net[puppets[1]] + net[puppets[2]];
        l.arbiterNet = net[arbiter];
        l.colluderNet = net[colluder];
        l.memberNet = new int256[](l.group.length);
        for (uint256 i; i < l.group.length; ++i) {
            l.memberNet[i] = net[l.group[i]];
            l.honestMember[i] = isHonest[l.group[i]];
        }
        l.terminal = ghostTerminal[taskId];
        l.terminalState = ghostState[taskId];
    }

    function setForcing(bool on) external {
        forcing = on;
    }

    // ------------------------------------------------------------ helpers

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        return lo + x % (hi - lo + 1);
    }

    function _now() internal view returns (uint256) {
        return block.timestamp;
    }

    function _count(uint256 action) internal {
        ++successes[action];
    }

    function _room() internal view returns (bool) {
        return forcing || live.length - _pending.length < MAX_LIVE;
    }

    /// @dev Before a new task when MAX_LIVE tasks are live: closes the first live task the
    /// legitimate way (cancel or expire it, finalize it, have its arbiter rule, sweep it),
    /// moving time past its deadline (the honest members acting on the way).
    function _makeRoom() internal {
        if (_room()) return;
        uint256 taskId;
        for (uint256 k; k < live.length; ++k) {
            if (!_queued[live[k]]) {
                taskId = live[k];
                break;
            }
        }
        TaskMarket.TaskView memory t = _task(taskId);
        address[] memory g = _group[taskId];
        TaskMarket.State s = t.state;
        if (s == TaskMarket.State.Open && t.claimed == 0) {
            if (_now() <= t.claimDeadline) {
                _call(taskId, client, 0, abi.encodeCall(TaskMarket.cancel, (taskId)));
                _count(CANCEL);
            } else {
                _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.expire, (taskId, g)));
                _count(EXPIRE_OPEN);
            }
        } else if (s == TaskMarket.State.Open || s == TaskMarket.State.Running) {
            _warpTo(uint256(t.claimDeadline) + t.workWindow + 1); // past the work deadline either way
            if (_task(taskId).state == TaskMarket.State.Running) {
                _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.expire, (taskId, g)));
                _count(EXPIRE_RUNNING);
            }
        } else if (s == TaskMarket.State.Disputed && _now() <= t.settleDeadline) {
            _resolve(taskId);
        } else if (s == TaskMarket.State.Submitted || s == TaskMarket.State.Disputed) {
            _warpTo(uint256(t.settleDeadline) + 1);
            _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.finalize, (taskId, g)));
            _count(s == TaskMarket.State.Submitted ? FINALIZE_REVIEW : FINALIZE_SILENT_ARBITER);
        }
        t = _task(taskId);
        if (t.state == TaskMarket.State.Settled && !t.closed) {
            _warpTo(uint256(t.settleDeadline) + 1);
            _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.sweep, (taskId, g)));
            _count(SWEEP);
        }
        require(_queued[taskId], "handler: a task did not close");
    }

    function _worth(address token, address who) internal view returns (uint256) {
        uint256 wallet = token == address(0) ? who.balance : mtt.balanceOf(who);
        return wallet + market.creditOf(who, token);
    }

    /// @dev Calls the market as `sender`, bubbling a revert, and books what every actor gained
    /// or lost and what was burned against `taskId`.
    function _call(uint256 taskId, address sender, uint256 value, bytes memory data) internal {
        address token = tokenOf[taskId];
        address[] memory who = _tracked(taskId, sender);
        uint256[] memory before = new uint256[](who.length);
        for (uint256 i; i < who.length; ++i) {
            before[i] = _worth(token, who[i]);
        }
        uint256 burnedBefore = market.burnedOf(token);
        vm.prank(sender);
        (bool ok, bytes memory ret) = address(market).call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        _settleBooks(taskId, token, who, before);
        burnedBy[taskId] += market.burnedOf(token) - burnedBefore;
        _book(taskId);
    }

    /// @dev Books each actor's gain since `before` (wallet and credit) against the task, and the
    /// credits now owed in `token`.
    function _settleBooks(uint256 taskId, address token, address[] memory who, uint256[] memory before) internal {
        int256 flow;
        mapping(address => int256) storage net = netOf[taskId];
        for (uint256 i; i < who.length; ++i) {
            address a = who[i];
            uint256 credit = market.creditOf(a, token);
            uint256 cached = _creditOf[token][a];
            if (credit != cached) {
                creditSum[token] = creditSum[token] + credit - cached;
                _creditOf[token][a] = credit;
            }
            uint256 wallet = token == address(0) ? a.balance : mtt.balanceOf(a);
            int256 delta = int256(wallet + credit) - int256(before[i]);
            if (delta != 0) {
                net[a] += delta;
                flow += delta;
            }
        }
        flowOf[taskId] += flow;
    }

    /// @dev Whom a call on a task can pay or charge: the client side, the two arbiters, the
    /// members and the caller (a claimant is not a member yet). A payment to anyone else would
    /// break the per-task balance the suite checks.
    function _tracked(uint256 taskId, address sender) internal view returns (address[] memory who) {
        address[] storage g = _group[taskId];
        who = new address[](7 + g.length);
        (who[0], who[1], who[2], who[3], who[4], who[5]) = (client, puppets[0], puppets[1], puppets[2], arbiter, colluder);
        uint256 n = 6;
        for (uint256 i; i < g.length; ++i) {
            if (!isPuppet[g[i]]) who[n++] = g[i];
        }
        bool listed = sender == address(this) || sender == client || isPuppet[sender] || sender == arbiter
            || sender == colluder;
        for (uint256 i; i < n && !listed; ++i) {
            listed = who[i] == sender;
        }
        if (!listed) who[n++] = sender;
        assembly ("memory-safe") {
            mstore(who, n)
        }
    }

    function _task(uint256 taskId) internal view returns (TaskMarket.TaskView memory) {
        return market.getTask(taskId);
    }

    function _indexOf(address[] memory g, address who) internal pure returns (uint256) {
        for (uint256 i; i < g.length; ++i) {
            if (g[i] == who) return i;
        }
        return type(uint256).max;
    }

    function _popcount(uint256 x) internal pure returns (uint256 c) {
        for (; x != 0; x &= x - 1) {
            ++c;
        }
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _lateOpen(TaskMarket.TaskView memory t) internal pure returns (bool) {
        return t.state == TaskMarket.State.Submitted || t.state == TaskMarket.State.Disputed
            || (t.state == TaskMarket.State.Settled && !t.closed);
    }

    // ------------------------------------------------------------ market steps

    function _post(uint256 seed, uint8 slots, bool useToken, bool colluding) internal returns (uint256 taskId) {
        address token = useToken ? address(mtt) : address(0);
        uint96 reward = uint96(_bound(seed >> 32, 1, 1e22));
        uint256 floor = (uint256(reward) + 100 * uint256(slots) - 1) / (100 * uint256(slots));
        uint96 bond = uint96(floor + (seed >> 128) % 1e18);
        TaskMarket.TaskParams memory p = TaskMarket.TaskParams({
            token: token,
            reward: reward,
            bond: bond,
            slots: slots,
            claimWindow: uint32(_bound(seed, 10 minutes, 12 hours)),
            workWindow: uint32(_bound(seed >> 8, 10 minutes, 1 days)),
            reviewWindow: uint32(_bound(seed >> 16, 10 minutes, 12 hours)),
            arbitrationWindow: uint32(_bound(seed >> 24, 10 minutes, 12 hours)),
            arbiter: colluding ? colluder : arbiter,
            specHash: keccak256(abi.encode(seed)),
            validationHash: bytes32(0)
        });
        taskId = market.taskCount() + 1;
        tokenOf[taskId] = token;
        taskIds.push(taskId);
        live.push(taskId);
        _livePosition[taskId] = live.length;
        _call(taskId, client, useToken ? 0 : reward, abi.encodeCall(TaskMarket.postTask, (p, "handler://spec")));
        _count(POST);
    }

    function _claimAs(uint256 taskId, address who) internal {
        TaskMarket.TaskView memory t = _task(taskId);
        _call(
            taskId,
            who,
            t.token == address(0) ? t.bond : 0,
            abi.encodeCall(TaskMarket.claim, (taskId, _group[taskId]))
        );
        _group[taskId].push(who);
        _count(CLAIM);
    }

    /// @dev `g[by]` submits `root` with the signatures of the members in `mask`.
    function _submit(uint256 taskId, bytes32 root, uint256 mask, uint256 by) internal {
        address[] memory g = _group[taskId];
        bytes[] memory sigs = new bytes[](g.length);
        bytes32 digest = market.resultDigest(taskId, root);
        for (uint256 i; i < g.length; ++i) {
            if (i != by && mask & (uint256(1) << i) != 0) sigs[i] = _sign(_keyOf[g[i]], digest);
        }
        vm.prank(g[by]);
        market.submitResult(taskId, root, "handler://result", g, sigs);
        rootOf[taskId] = root;
    }

    /// @dev The honest majority's submission: every honest member signs, each puppet when the
    /// seed says so, the saboteur never. False when they are no majority.
    function _trySubmitHonest(uint256 taskId, uint256 seed) internal returns (bool) {
        address[] memory g = _group[taskId];
        uint256 mask;
        for (uint256 i; i < g.length; ++i) {
            if (isHonest[g[i]] || (isPuppet[g[i]] && (seed >> i) & 1 == 1)) mask |= uint256(1) << i;
        }
        if (_popcount(mask) < g.length / 2 + 1) return false;
        _submit(taskId, ROOT, mask, _someBit(mask, seed));
        _count(SUBMIT);
        return true;
    }

    /// @dev The puppets' submission, leaving every other member out, of the hostile result (or
    /// of the honest one, copied). False when the puppets are no majority.
    function _trySubmitHostile(uint256 taskId, uint256 seed) internal returns (bool) {
        address[] memory g = _group[taskId];
        uint256 mask;
        for (uint256 i; i < g.length; ++i) {
            if (isPuppet[g[i]]) mask |= uint256(1) << i;
        }
        if (_popcount(mask) < g.length / 2 + 1) return false;
        _submit(taskId, seed % 2 == 0 ? GARBAGE : ROOT, mask, _someBit(mask, seed));
        _count(SUBMIT_HOSTILE);
        return true;
    }

    function _someBit(uint256 mask, uint256 seed) internal pure returns (uint256) {
        uint256 start = seed % 32;
        for (uint256 k; k < 32; ++k) {
            uint256 i = (start + k) % 32;
            if (mask & (uint256(1) << i) != 0) return i;
        }
        return 0;
    }

    function _accept(uint256 taskId) internal {
        _call(taskId, client, 0, abi.encodeCall(TaskMarket.accept, (taskId, _group[taskId])));
        _count(ACCEPT);
    }

    function _dispute(uint256 taskId) internal {
        _call(taskId, client, 0, abi.encodeCall(TaskMarket.dispute, (taskId, keccak256("handler reason"))));
        _count(DISPUTE);
    }

    /// @dev The arbiter rules: the colluding one always for the client, the honest one for the
    /// miners exactly when the result is the honest one.
    function _resolve(uint256 taskId) internal {
        TaskMarket.TaskView memory t = _task(taskId);
        bool minersWin = t.arbiter == arbiter && rootOf[taskId] == ROOT;
        _call(taskId, t.arbiter, 0, abi.encodeCall(TaskMarket.resolve, (taskId, minersWin, _group[taskId])));
        _count(t.arbiter == colluder ? RESOLVE_COLLUDING : minersWin ? RESOLVE_MINERS : RESOLVE_CLIENT);
    }

    // ------------------------------------------------------------ building tasks

    /// @dev A group for a new task: `kind` 0 = an honest majority (n/2+1 honest members, the
    /// rest puppets or the saboteur), 1 = a puppet majority (n/2+1 puppets, the rest honest: the
    /// reverse attack), 2 = hostile only (the colluding arbiter's tasks: puppets and the
    /// saboteur). Rotated so that slot 0 is sometimes hostile.
    function _members(uint256 seed, uint8 n, uint256 kind) internal view returns (address[] memory m) {
        m = new address[](n);
        uint256 majority = n / 2 + 1;
        address[4] memory hostile = [puppets[0], puppets[1], puppets[2], saboteur];
        for (uint256 i; i < n; ++i) {
            if (kind == 0) {
                m[i] = i < majority ? honest[(seed % 4 + i) % 4] : hostile[(seed % 4 + i) % 4];
            } else if (kind == 1) {
                m[i] = i < majority ? puppets[i] : honest[(seed % 4 + i) % 4];
            } else {
                m[i] = i < majority ? puppets[i] : saboteur;
            }
        }
        uint256 r = (seed >> 60) % n;
        address[] memory rotated = new address[](n);
        for (uint256 i; i < n; ++i) {
            rotated[i] = m[(i + r) % n];
        }
        m = rotated;
    }

    /// @dev Posts a task and fills it with a group of `kind`: RUNNING, under the colluding arbiter
    /// for kind 2 (honest miners never join those).
    function _newRunning(uint256 seed, uint256 kind) internal returns (uint256 taskId) {
        uint8 n;
        if (kind == 1) n = seed % 2 == 0 ? 3 : 5;
        else if (kind == 2) n = uint8(_bound(seed >> 3, 1, 3));
        else n = uint8(_bound(seed >> 3, 1, 5));
        taskId = _post(seed, n, (seed >> 7) & 1 == 1, kind == 2);
        address[] memory m = _members(seed, n, kind);
        for (uint256 i; i < n; ++i) {
            _claimAs(taskId, m[i]);
        }
    }

    /// @dev A task SUBMITTED (with the honest result by the honest majority, or by the puppets
    /// under the colluding arbiter when `colluding`).
    function _newSubmitted(uint256 seed, bool colluding) internal returns (uint256 taskId) {
        taskId = _newRunning(seed, colluding ? 2 : 0);
        bool ok = colluding ? _trySubmitHostile(taskId, seed) : _trySubmitHonest(taskId, seed);
        require(ok, "handler: no majority in a built group");
    }

    // ------------------------------------------------------------ finding tasks

    uint256 internal constant NEED_OPEN_FREE = 0; // OPEN, claimable now
    uint256 internal constant NEED_OPEN_EMPTY = 1; // OPEN without claims (cancel/expire)
    uint256 internal constant NEED_RUNNING = 2; // RUNNING, inside the work window
    uint256 internal constant NEED_SUBMITTED_OPEN = 3; // SUBMITTED, inside the review window
    uint256 internal constant NEED_SUBMITTED = 4; // SUBMITTED
    uint256 internal constant NEED_DISPUTED_OPEN = 5; // DISPUTED, inside the arbitration window
    uint256 internal constant NEED_DISPUTED = 6; // DISPUTED
    uint256 internal constant NEED_UNSWEPT = 7; // SETTLED with late claims still open

    function _fits(TaskMarket.TaskView memory t, uint256 need) internal view returns (bool) {
        TaskMarket.State s = t.state;
        if (need == NEED_OPEN_FREE) return s == TaskMarket.State.Open && _now() <= t.claimDeadline && t.claimed < t.slots;
        if (need == NEED_OPEN_EMPTY) return s == TaskMarket.State.Open && t.claimed == 0;
        if (need == NEED_RUNNING) return s == TaskMarket.State.Running && _now() <= t.workDeadline;
        if (need == NEED_SUBMITTED_OPEN) return s == TaskMarket.State.Submitted && _now() <= t.settleDeadline;
        if (need == NEED_SUBMITTED) return s == TaskMarket.State.Submitted;
        if (need == NEED_DISPUTED_OPEN) return s == TaskMarket.State.Disputed && _now() <= t.settleDeadline;
        if (need == NEED_DISPUTED) return s == TaskMarket.State.Disputed;
        return s == TaskMarket.State.Settled && !t.closed;
    }

    /// @dev The first task from a random start that fits `need` (0 when none).
    function _find(uint256 seed, uint256 need) internal view returns (uint256) {
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[(seed % n + k) % n];
            if (_fits(_task(taskId), need)) return taskId;
        }
        return 0;
    }

    // ------------------------------------------------------------ the honest protocol and time

    /// @dev What the honest members of a task must do now: check in while it runs; answer a
    /// result that left them out (endorse the honest one, check in otherwise) by its deadline.
    function _honestAct(uint256 taskId, bool act) internal returns (bool) {
        return _honestAct(taskId, _task(taskId), act);
    }

    function _honestAct(uint256 taskId, TaskMarket.TaskView memory t, bool act) internal returns (bool needed) {
        address[] memory g = _group[taskId];
        bool running = t.state == TaskMarket.State.Running && _now() <= t.workDeadline;
        bool late = _lateOpen(t) && _now() <= t.settleDeadline;
        if (!running && !late) return false;
        for (uint256 i; i < g.length; ++i) {
            if (!isHonest[g[i]]) continue;
            uint256 bit = uint256(1) << i;
            if (t.signedSlots & bit != 0) continue;
            bool present = t.presentSlots & bit != 0;
            if (running) {
                if (present) continue;
                needed = true;
                if (act) {
                    _call(taskId, g[i], 0, abi.encodeCall(TaskMarket.checkIn, (taskId, g, EVIDENCE)));
                    _count(CHECKIN_HONEST);
                }
            } else if (rootOf[taskId] == ROOT && (t.state != TaskMarket.State.Settled || t.minersPaid)) {
                needed = true;
                if (act) {
                    _call(taskId, g[i], 0, abi.encodeCall(TaskMarket.endorse, (taskId, g)));
                    _count(ENDORSE_LATE);
                }
            } else if (!present) {
                needed = true;
                if (act) {
                    _call(taskId, g[i], 0, abi.encodeCall(TaskMarket.checkIn, (taskId, g, EVIDENCE)));
                    _count(CHECKIN_LATE);
                }
            }
        }
    }

    /// @dev The earliest moment (>= now, < target) at which some honest member must act on some
    /// task: a work or settle deadline (inclusive), or the second a claim window of a partial
    /// group with honest members ends (the implicit start).
    function _nextStop(uint256 target) internal returns (uint256 next, bool found) {
        next = target;
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[k];
            TaskMarket.TaskView memory t = _task(taskId);
            uint256 when;
            if (t.state == TaskMarket.State.Open) {
                if (t.claimed == 0 || !_hasHonest(taskId)) continue;
                when = uint256(t.claimDeadline) + 1;
            } else if (t.state == TaskMarket.State.Running) {
                when = t.workDeadline;
            } else if (_lateOpen(t)) {
                when = t.settleDeadline;
            } else {
                continue;
            }
            if (when < _now() || when >= next) continue;
            if (t.state != TaskMarket.State.Open && !_honestAct(taskId, t, false)) continue;
            (next, found) = (when, true);
        }
    }

    function _hasHonest(uint256 taskId) internal view returns (bool) {
        address[] storage g = _group[taskId];
        for (uint256 i; i < g.length; ++i) {
            if (isHonest[g[i]]) return true;
        }
        return false;
    }

    /// @dev Moves time to `target`, stopping wherever honest members must act and letting them.
    function _warpTo(uint256 target) internal {
        for (uint256 guard; ; ++guard) {
            require(guard < 64, "handler: the honest members cannot keep up");
            (uint256 next, bool found) = _nextStop(target);
            if (!found) break;
            if (next > _now()) vm.warp(next);
            uint256 n = live.length;
            for (uint256 k; k < n; ++k) {
                _honestAct(live[k], true);
            }
        }
        if (target > _now()) vm.warp(target);
    }

    // ------------------------------------------------------------ actions (what forge calls)

    function post(uint256 seed, uint8 slots, bool useToken, bool colluding) public step {
        _makeRoom();
        _post(seed, uint8(_bound(slots, 1, 5)), useToken, colluding && seed % 3 == 0);
    }

    /// @dev A free slot of an OPEN task, by an eligible account (honest miners only under the
    /// honest arbiter); posts a task when none is open.
    function claim(uint256 seed, uint256 who) public step {
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[(seed % n + k) % n];
            TaskMarket.TaskView memory t = _task(taskId);
            if (!_fits(t, NEED_OPEN_FREE)) continue;
            address miner = _claimant(t, taskId, who);
            if (miner == address(0)) continue;
            _claimAs(taskId, miner);
            if (_task(taskId).state == TaskMarket.State.Running && who % 2 == 0) _honestAct(taskId, true);
            return;
        }
        _makeRoom();
        uint256 fresh = _post(seed, uint8(_bound(seed >> 5, 1, 5)), seed % 2 == 0, false);
        _claimAs(fresh, _claimant(_task(fresh), fresh, who));
    }

    function _claimant(TaskMarket.TaskView memory t, uint256 taskId, uint256 who) internal view returns (address) {
        address[8] memory c = [honest[0], honest[1], honest[2], honest[3], puppets[0], puppets[1], puppets[2], saboteur];
        address[] memory g = _group[taskId];
        for (uint256 k; k < 8; ++k) {
            address a = c[(who % 8 + k) % 8];
            if (isHonest[a] && t.arbiter != arbiter) continue;
            if (_indexOf(g, a) == type(uint256).max) return a;
        }
        return address(0);
    }

    /// @dev The honest majority submits the honest result on a RUNNING task where it can.
    function submit(uint256 seed) public step {
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[(seed % n + k) % n];
            if (_fits(_task(taskId), NEED_RUNNING) && _trySubmitHonest(taskId, seed)) return;
        }
        _makeRoom();
        _newSubmitted(seed, false);
    }

    /// @dev Puppets holding a majority submit without the honest members.
    function submitHostile(uint256 seed) public step {
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[(seed % n + k) % n];
            if (_fits(_task(taskId), NEED_RUNNING) && _trySubmitHostile(taskId, seed)) return;
        }
        _makeRoom();
        uint256 fresh = _newRunning(seed, seed % 3 == 0 ? 2 : 1);
        require(_trySubmitHostile(fresh, seed), "handler: puppets are the majority");
    }

    function accept(uint256 seed) public step {
        uint256 taskId = _find(seed, NEED_SUBMITTED);
        if (taskId == 0) {
            _makeRoom();
            taskId = _newSubmitted(seed, seed % 4 == 0);
        }
        _accept(taskId);
    }

    function dispute(uint256 seed) public step {
        uint256 taskId = _find(seed, NEED_SUBMITTED_OPEN);
        if (taskId == 0) {
            _makeRoom();
            taskId = _newSubmitted(seed, seed % 3 == 0);
        }
        _dispute(taskId);
    }

    /// @dev `kind` 0: the honest arbiter on the honest result; 1: the honest arbiter on the
    /// puppets' hostile result; 2: the colluding arbiter.
    function resolve(uint256 seed, uint8 kind) public step {
        kind %= 3;
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[(seed % n + k) % n];
            TaskMarket.TaskView memory t = _task(taskId);
            if (!_fits(t, NEED_DISPUTED_OPEN) || _kindOf(taskId, t) != kind) continue;
            _resolve(taskId);
            return;
        }
        _makeRoom();
        uint256 fresh;
        if (kind == 0) {
            fresh = _newSubmitted(seed, false);
        } else {
            fresh = _newRunning(seed, kind == 1 ? 1 : 2);
            require(_trySubmitHostile(fresh, kind == 1 ? 0 : seed), "handler: puppets are the majority");
        }
        _dispute(fresh);
        _resolve(fresh);
    }

    function _kindOf(uint256 taskId, TaskMarket.TaskView memory t) internal view returns (uint256) {
        if (t.arbiter == colluder) return 2;
        return rootOf[taskId] == ROOT ? 0 : 1;
    }

    /// @dev Anyone finalizes after the review window (or, `silent`, after the arbitration window
    /// of an arbiter that never ruled).
    function finalize(uint256 seed, bool silent) public step {
        uint256 taskId = _find(seed, silent ? NEED_DISPUTED : NEED_SUBMITTED);
        if (taskId == 0) {
            _makeRoom();
            taskId = _newSubmitted(seed, seed % 4 == 0);
            if (silent) _dispute(taskId);
        }
        _warpTo(uint256(_task(taskId).settleDeadline) + 1);
        // the warp may have let other tasks move, never this one: only its parties settle it
        _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.finalize, (taskId, _group[taskId])));
        _count(silent ? FINALIZE_SILENT_ARBITER : FINALIZE_REVIEW);
    }

    /// @dev Anyone expires an OPEN task nobody claimed after its claim window, or (`running`) a
    /// RUNNING task without a result after its work window.
    function expire(uint256 seed, bool running) public step {
        uint256 taskId = _find(seed, running ? NEED_RUNNING : NEED_OPEN_EMPTY);
        if (taskId == 0) {
            _makeRoom();
            taskId = running ? _newRunning(seed, seed % 3) : _post(seed, uint8(_bound(seed >> 5, 1, 5)), seed % 2 == 0, false);
        }
        TaskMarket.TaskView memory t = _task(taskId);
        _warpTo(uint256(running ? t.workDeadline : t.claimDeadline) + 1);
        _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.expire, (taskId, _group[taskId])));
        _count(running ? EXPIRE_RUNNING : EXPIRE_OPEN);
    }

    function cancel(uint256 seed) public step {
        uint256 n = live.length;
        uint256 taskId;
        for (uint256 k; k < n; ++k) {
            uint256 id = live[(seed % n + k) % n];
            TaskMarket.TaskView memory t = _task(id);
            if (_fits(t, NEED_OPEN_EMPTY) && _now() <= t.claimDeadline) {
                taskId = id;
                break;
            }
        }
        if (taskId == 0) {
            _makeRoom();
            taskId = _post(seed, uint8(_bound(seed >> 5, 1, 5)), seed % 2 == 0, seed % 5 == 0);
        }
        _call(taskId, client, 0, abi.encodeCall(TaskMarket.cancel, (taskId)));
        _count(CANCEL);
    }

    /// @dev `byHonest`: the honest members of a RUNNING task check in; else a puppet checks in,
    /// while the task runs or late, after a result left it out (present, having done nothing).
    function checkIn(uint256 seed, bool byHonest) public step {
        uint256 n = live.length;
        for (uint256 k; k < n; ++k) {
            uint256 taskId = live[(seed % n + k) % n];
            TaskMarket.TaskView memory t = _task(taskId);
            if (byHonest) {
                if (_fits(t, NEED_RUNNING) && _honestAct(taskId, t, false)) {
                    _honestAct(taskId, t, true);
                    return;
                }
            } else if (_puppetCheckIn(taskId, t)) {
                return;
            }
        }
        _makeRoom();
        uint256 fresh = _newRunning(seed, byHonest ? 0 : 1);
        if (byHonest) _honestAct(fresh, true);
        else require(_puppetCheckIn(fresh, _task(fresh)), "handler: a puppet can check in");
    }

    function _puppetCheckIn(uint256 taskId, TaskMarket.TaskView memory t) internal returns (bool) {
        bool running = _fits(t, NEED_RUNNING);
        bool late = _lateOpen(t) && _now() <= t.settleDeadline;
        if (!running && !late) return false;
        address[] memory g = _group[taskId];
        for (uint256 i; i < g.length; ++i) {
            uint256 bit = uint256(1) << i;
            if (!isPuppet[g[i]] || t.signedSlots & bit != 0 || t.presentSlots & bit != 0) continue;
            _call(taskId, g[i], 0, abi.encodeCall(TaskMarket.checkIn, (taskId, g, EVIDENCE)));
            _count(CHECKIN_HOSTILE);
            return true;
        }
        return false;
    }

    /// @dev Anyone sweeps a settled task once its settle deadline passed.
    function sweep(uint256 seed) public step {
        uint256 taskId = _find(seed, NEED_UNSWEPT);
        if (taskId == 0) {
            _makeRoom();
            taskId = _newRunning(seed, 1);
            require(_trySubmitHostile(taskId, seed), "handler: puppets are the majority");
            _accept(taskId);
        }
        _warpTo(uint256(_task(taskId).settleDeadline) + 1);
        _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.sweep, (taskId, _group[taskId])));
        _count(SWEEP);
    }

    function warp(uint32 secs) public step {
        _warpTo(_now() + _bound(secs, 1, 8 hours));
        _count(WARP);
    }

    /// @dev A whole lifecycle in one action: post, an honest-majority group claims, the honest
    /// majority submits, the client accepts (or disputes and the honest arbiter rules, or lets
    /// the review window pass), and the task closes (swept when someone was left out).
    function lifecycle(uint256 seed) public step {
        _makeRoom();
        uint256 taskId = _newSubmitted(seed, false);
        uint256 how = (seed >> 100) % 3;
        if (how == 0) {
            _accept(taskId);
        } else if (how == 1) {
            _dispute(taskId);
            _resolve(taskId);
        } else {
            _warpTo(uint256(_task(taskId).settleDeadline) + 1);
            _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.finalize, (taskId, _group[taskId])));
        }
        TaskMarket.TaskView memory t = _task(taskId);
        if (!t.closed) {
            _warpTo(uint256(t.settleDeadline) + 1);
            _call(taskId, address(this), 0, abi.encodeCall(TaskMarket.sweep, (taskId, _group[taskId])));
        }
        require(_task(taskId).closed, "handler: a lifecycle ends closed");
        _count(LIFECYCLE);
    }

    /// @dev The reverse attack: a group where the client's puppets are a majority (2 of 3 or 3
    /// of 5) fills, the puppets submit without the honest members and the client accepts, all in
    /// one block, before anyone could check in. The honest members answer by the settle deadline
    /// (when time next moves).
    function takeover(uint256 seed) public step {
        _makeRoom();
        uint256 taskId = _newRunning(seed, 1);
        require(_trySubmitHostile(taskId, seed), "handler: puppets are the majority");
        _accept(taskId);
        _count(TAKEOVER);
    }

    /// @dev Wrong parties try privileged calls, and forged or stale groups; every one must fail.
    function attack(uint256 seed) public step {
        if (taskIds.length == 0) return;
        uint256 taskId = taskIds[seed % taskIds.length];
        TaskMarket.TaskView memory t = _task(taskId);
        address[] memory g = _group[taskId];
        _mustFail(puppets[seed % 3], abi.encodeCall(TaskMarket.accept, (taskId, g)));
        _mustFail(t.arbiter == arbiter ? colluder : arbiter, abi.encodeCall(TaskMarket.resolve, (taskId, false, g)));
        _mustFail(client, abi.encodeCall(TaskMarket.endorse, (taskId, g)));
        _mustFail(client, abi.encodeCall(TaskMarket.checkIn, (taskId, g, EVIDENCE)));
        _mustFail(arbiter, abi.encodeCall(TaskMarket.dispute, (taskId, bytes32(0))));
        if (g.length > 0) {
            address[] memory forged = new address[](g.length);
            for (uint256 i; i < g.length; ++i) {
                forged[i] = g[i];
            }
            forged[seed % g.length] = saboteur == g[seed % g.length] ? client : saboteur;
            _mustFail(g[0], abi.encodeCall(TaskMarket.endorse, (taskId, forged)));
            _mustFail(g[0], abi.encodeCall(TaskMarket.checkIn, (taskId, forged, EVIDENCE)));
            _mustFail(address(this), abi.encodeCall(TaskMarket.sweep, (taskId, forged)));
            _mustFail(address(this), abi.encodeCall(TaskMarket.expire, (taskId, forged)));
        }
        // nobody takes a credit that is not theirs
        _mustFail(saboteur, abi.encodeCall(TaskMarket.withdraw, (address(0))));
        _count(ATTACK);
    }

    function _mustFail(address sender, bytes memory data) internal {
        vm.prank(sender);
        (bool ok,) = address(market).call(data);
        require(!ok, "handler: a wrong party succeeded");
    }

    // ------------------------------------------------------------ forced coverage

    /// @dev Makes `action` succeed once now (afterInvariant calls it for any action the random
    /// sequence did not reach), driving a fresh task where needed.
    function force(uint256 action, uint256 seed) external {
        uint256 before = successes[action];
        if (action == POST) post(seed, 3, seed % 2 == 0, false);
        else if (action == CLAIM) claim(seed, seed);
        else if (action == SUBMIT) submit(seed);
        else if (action == SUBMIT_HOSTILE) submitHostile(seed);
        else if (action == ACCEPT) accept(seed);
        else if (action == DISPUTE) dispute(seed);
        else if (action == RESOLVE_MINERS) resolve(seed, 0);
        else if (action == RESOLVE_CLIENT) resolve(seed, 1);
        else if (action == RESOLVE_COLLUDING) resolve(seed, 2);
        else if (action == FINALIZE_REVIEW) finalize(seed, false);
        else if (action == FINALIZE_SILENT_ARBITER) finalize(seed, true);
        else if (action == EXPIRE_OPEN) expire(seed, false);
        else if (action == EXPIRE_RUNNING) expire(seed, true);
        else if (action == CANCEL) cancel(seed);
        else if (action == CHECKIN_HONEST) checkIn(seed, true);
        else if (action == CHECKIN_HOSTILE) checkIn(seed, false);
        else if (action == ENDORSE_LATE || action == CHECKIN_LATE) _forceLateAnswer(action, seed);
        else if (action == SWEEP) sweep(seed);
        else if (action == WARP) warp(uint32(seed));
        else if (action == LIFECYCLE) lifecycle(seed);
        else if (action == TAKEOVER) takeover(seed);
        else if (action == ATTACK) attack(seed);
        require(successes[action] > before, string.concat("handler: cannot reach ", actionName(action)));
    }

    function _forceLateAnswer(uint256 action, uint256 seed) internal {
        // the puppets submit the honest result (to be endorsed) or the hostile one (checked in against)
        uint256 s = action == ENDORSE_LATE ? (seed | 1) : (seed & ~uint256(1));
        uint256 taskId = _newRunning(s, 1);
        require(_trySubmitHostile(taskId, s), "handler: puppets are the majority");
        _accept(taskId);
        _warpTo(uint256(_task(taskId).settleDeadline) + 1);
    }

    // ------------------------------------------------------------ ghost bookkeeping

    receive() external payable {}
}
