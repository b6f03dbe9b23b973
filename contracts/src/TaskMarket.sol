// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/**
 * @title TaskMarket
 * @notice Escrow for MANTA AutoML tasks: a client posts a task with a reward, registered miners
 * claim its slots with a bond, the leader (slot 0) submits the result root signed by every
 * member, and the reward is settled by the client, by the passing of the review window, or by
 * the task's arbiter. Every state has a deadline and a way out; money leaves only through
 * {withdraw} (pull payments).
 *
 * Time-based transition: an OPEN task whose claim window ends with at least one claim (but with
 * free slots left) is RUNNING from then on, with workDeadline = claimDeadline + workWindow. No
 * transaction happens at that moment, so no event can mark it; {stateOf} and {getTask} report
 * the effective state, and watchers derive the start from the TaskPosted/TaskClaimed events.
 *
 * Deadlines are inclusive for the party acting inside a window (claim, submit, dispute, resolve
 * and cancel need `block.timestamp <= deadline`) and exclusive for the exits that follow it
 * (expire and finalize need `block.timestamp > deadline`), so at every moment exactly one side
 * of each deadline applies.
 *
 * Times are stored as uint32 seconds; postTask refuses windows whose last possible deadline
 * would fall after 2106-02-07 (TaskMarketBeyondTimeHorizon). Views and events widen them to uint64.
 */
contract TaskMarket is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    enum State {
        None,
        Open,
        Running,
        Submitted,
        Disputed,
        Settled,
        Cancelled,
        Expired
    }

    struct TaskParams {
        address token;
        uint96 reward;
        uint96 bond;
        uint8 slots;
        uint32 claimWindow;
        uint32 workWindow;
        uint32 reviewWindow;
        uint32 arbitrationWindow;
        address arbiter;
        bytes32 specHash;
        bytes32 validationHash;
    }

    struct TaskView {
        address client;
        address token;
        uint96 reward;
        uint96 bond;
        address arbiter;
        uint8 slots;
        uint8 claimed;
        State state;
        uint64 claimDeadline;
        uint64 workDeadline;
        uint64 settleDeadline;
        uint32 workWindow;
        uint32 reviewWindow;
        uint32 arbitrationWindow;
        bytes32 specHash;
        bytes32 resultRoot;
    }

    /// @dev Five storage slots per task (the comments mark where each slot starts). Times are
    /// uint32 seconds (good until 2106; postTask refuses windows that would end later), and the
    /// token is an index into `_tokens` (0 = native coin), which leaves room to keep every
    /// field that changes after posting in slot 2, so each transition rewrites one warm slot.
    struct Task {
        address client; // slot 0
        uint96 reward;
        address arbiter; // slot 1
        uint96 bond;
        uint40 tokenId; // slot 2
        uint8 slots;
        uint8 claimed;
        State state;
        uint32 claimDeadline;
        uint32 workDeadline; // 0 until the group fills (or a result arrives after an implicit start)
        uint32 settleDeadline; // review deadline while SUBMITTED, arbitration deadline while DISPUTED
        uint32 workWindow;
        uint32 reviewWindow;
        uint32 arbitrationWindow;
        bytes32 specHash; // slot 3
        bytes32 resultRoot; // slot 4
    }

    /// @dev One slot per group member: who, and the share of the reward once a result is in.
    struct Member {
        address account;
        uint96 share;
    }

    /// @dev One slot per account: reputation, registration and the native-coin credit, so that
    /// settling a registered miner rewrites a slot that is already non-zero.
    struct Account {
        uint32 completed;
        uint32 failed;
        uint32 disputesLost;
        bool registered;
        uint152 nativeCredit;
    }

    uint8 public constant MAX_SLOTS = 32;
    uint256 public constant MAX_ENDPOINT_BYTES = 256;
    bytes32 public constant RESULT_TYPEHASH = keccak256("Result(uint256 taskId,bytes32 resultRoot,uint96[] shares)");

    uint64 private _taskCount; // one slot with _tokenCount: registering a token adds no fresh slot
    uint40 private _tokenCount;
    mapping(uint256 taskId => Task) private _tasks;
    mapping(uint256 taskId => mapping(uint256 slot => Member)) private _members;
    mapping(address account => Account) private _accounts;
    mapping(address account => string) private _endpoints;
    mapping(address account => mapping(address token => uint256)) private _tokenCredits;
    /// @dev Bit i set: group member i checked in (see {checkIn}).
    mapping(uint256 taskId => uint256 slotBits) private _checkedIn;
    mapping(uint40 tokenId => address) private _tokens;
    mapping(address token => uint40 tokenId) private _tokenIds;

    event MinerRegistered(address indexed miner, string endpoint);
    event TaskPosted(
        uint256 indexed taskId,
        address indexed client,
        address indexed token,
        uint256 reward,
        uint256 bond,
        uint8 slots,
        uint64 claimDeadline,
        uint32 workWindow,
        uint32 reviewWindow,
        uint32 arbitrationWindow,
        address arbiter,
        bytes32 specHash,
        bytes32 validationHash,
        string specURI
    );
    event TaskClaimed(uint256 indexed taskId, address indexed miner, uint8 slot);
    event TaskStarted(uint256 indexed taskId, uint64 workDeadline);
    event ResultSubmitted(
        uint256 indexed taskId,
        address indexed leader,
        bytes32 resultRoot,
        uint96[] shares,
        uint64 reviewDeadline,
        string resultURI
    );
    event TaskDisputed(uint256 indexed taskId, bytes32 reasonHash, uint64 arbitrationDeadline);
    event DisputeResolved(uint256 indexed taskId, address indexed arbiter, bool minersWon);
    event TaskSettled(uint256 indexed taskId, bool minersPaid);
    event TaskCancelled(uint256 indexed taskId);
    event TaskExpired(uint256 indexed taskId, bool bondsSlashed);
    event MemberCheckedIn(uint256 indexed taskId, address indexed miner, uint8 slot);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    error TaskMarketUnknownTask(uint256 taskId);
    error TaskMarketWrongState(uint256 taskId, State state);
    error TaskMarketNotClient(uint256 taskId, address caller);
    error TaskMarketNotLeader(uint256 taskId, address caller);
    error TaskMarketNotArbiter(uint256 taskId, address caller);
    error TaskMarketDeadlinePassed(uint256 taskId, uint64 deadline);
    error TaskMarketDeadlineNotReached(uint256 taskId, uint64 deadline);
    error TaskMarketWrongPayment(uint256 expected, uint256 sent);
    error TaskMarketFeeOnTransfer(address token, uint256 expected, uint256 received);
    error TaskMarketNativeTransferFailed(address account, uint256 amount);
    error TaskMarketNotRegistered(address miner);
    error TaskMarketAlreadyClaimed(uint256 taskId, address miner);
    error TaskMarketPartyCannotClaim(uint256 taskId, address miner);
    error TaskMarketClaimsExist(uint256 taskId, uint8 claimed);
    error TaskMarketLengthMismatch(uint256 taskId, uint256 members, uint256 shares, uint256 signatures);
    error TaskMarketBadShares(uint256 taskId, uint256 sum, uint256 reward);
    error TaskMarketBadSignature(uint256 taskId, uint256 index);
    error TaskMarketZeroResultRoot(uint256 taskId);
    error TaskMarketNothingToWithdraw(address account, address token);
    error TaskMarketInvalidReward(uint256 reward);
    error TaskMarketInvalidSlots(uint8 slots);
    error TaskMarketInvalidWindow(string name, uint32 value);
    error TaskMarketInvalidArbiter(address arbiter);
    error TaskMarketBeyondTimeHorizon(uint256 latestDeadline);
    error TaskMarketInvalidEndpoint(uint256 length);
    error TaskMarketNotMember(uint256 taskId, address caller);
    error TaskMarketAlreadyCheckedIn(uint256 taskId, address miner);

    constructor() EIP712("MANTA TaskMarket", "1") {}

    // ---------------------------------------------------------------- miner registry

    /// @notice Sets (or replaces) the caller's HTTP endpoint, which makes it a registered miner.
    function register(string calldata endpoint) external {
        uint256 length = bytes(endpoint).length;
        if (length == 0 || length > MAX_ENDPOINT_BYTES) revert TaskMarketInvalidEndpoint(length);
        _endpoints[msg.sender] = endpoint;
        _accounts[msg.sender].registered = true;
        emit MinerRegistered(msg.sender, endpoint);
    }

    // ---------------------------------------------------------------- lifecycle

    /// @notice Opens a task and escrows its reward (msg.value for the native coin, else a
    /// transferFrom of exactly `p.reward`, which needs a prior approval).
    function postTask(TaskParams calldata p, string calldata specURI)
        external
        payable
        nonReentrant
        returns (uint256 taskId)
    {
        _checkParams(p);
        if (p.token == address(0)) {
            if (msg.value != p.reward) revert TaskMarketWrongPayment(p.reward, msg.value);
        } else if (msg.value != 0) {
            revert TaskMarketWrongPayment(0, msg.value);
        }
        taskId = ++_taskCount;
        uint32 claimDeadline = uint32(block.timestamp + p.claimWindow);
        Task storage t = _tasks[taskId];
        t.client = msg.sender;
        t.reward = p.reward;
        t.arbiter = p.arbiter;
        t.bond = p.bond;
        t.tokenId = _tokenIdFor(p.token);
        t.slots = p.slots;
        t.state = State.Open;
        t.claimDeadline = claimDeadline;
        t.workWindow = p.workWindow;
        t.reviewWindow = p.reviewWindow;
        t.arbitrationWindow = p.arbitrationWindow;
        t.specHash = p.specHash;
        _emitPosted(taskId, claimDeadline, p, specURI);
        if (p.token != address(0)) _pullToken(p.token, p.reward);
    }

    /// @notice Takes the next free slot of an OPEN task, paying the bond; the slot that fills the
    /// group starts the work window.
    function claim(uint256 taskId) external payable nonReentrant {
        Task storage t = _existing(taskId);
        if (t.state != State.Open) revert TaskMarketWrongState(taskId, t.state);
        uint32 claimDeadline = t.claimDeadline;
        if (block.timestamp > claimDeadline) revert TaskMarketDeadlinePassed(taskId, claimDeadline);
        if (!_accounts[msg.sender].registered) revert TaskMarketNotRegistered(msg.sender);
        if (msg.sender == t.client || msg.sender == t.arbiter) revert TaskMarketPartyCannotClaim(taskId, msg.sender);
        address token = _tokenOf(t.tokenId);
        uint96 bond = t.bond;
        if (token == address(0)) {
            if (msg.value != bond) revert TaskMarketWrongPayment(bond, msg.value);
        } else if (msg.value != 0) {
            revert TaskMarketWrongPayment(0, msg.value);
        }
        uint8 slot = t.claimed;
        mapping(uint256 => Member) storage members = _members[taskId];
        for (uint256 i; i < slot; ++i) {
            if (members[i].account == msg.sender) revert TaskMarketAlreadyClaimed(taskId, msg.sender);
        }

        members[slot].account = msg.sender;
        t.claimed = slot + 1;
        emit TaskClaimed(taskId, msg.sender, slot);
        if (slot + 1 == t.slots) {
            uint32 workDeadline = uint32(block.timestamp + t.workWindow);
            t.state = State.Running;
            t.workDeadline = workDeadline;
            emit TaskStarted(taskId, workDeadline);
        }
        if (token != address(0)) _pullToken(token, bond);
    }

    /// @notice The leader submits the result root with the reward split and every member's
    /// EIP-712 signature over (taskId, resultRoot, shares), in slot order.
    function submitResult(
        uint256 taskId,
        bytes32 resultRoot,
        string calldata resultURI,
        uint96[] calldata shares,
        bytes[] calldata signatures
    ) external {
        uint32 reviewDeadline = _takeResult(taskId, resultRoot, shares, signatures);
        emit ResultSubmitted(taskId, msg.sender, resultRoot, shares, reviewDeadline, resultURI);
    }

    /// @notice The client accepts a submitted result: every member is credited its share plus its bond.
    function accept(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.client) revert TaskMarketNotClient(taskId, msg.sender);
        if (t.state != State.Submitted) revert TaskMarketWrongState(taskId, _effectiveState(t));
        _payMiners(taskId, t);
        emit TaskSettled(taskId, true);
    }

    /// @notice Anyone settles in the miners' favour once the client let the review window pass,
    /// or the arbiter let the arbitration window pass.
    function finalize(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        State state = t.state;
        if (state != State.Submitted && state != State.Disputed) {
            revert TaskMarketWrongState(taskId, _effectiveState(t));
        }
        uint32 deadline = t.settleDeadline;
        if (block.timestamp <= deadline) revert TaskMarketDeadlineNotReached(taskId, deadline);
        _payMiners(taskId, t);
        emit TaskSettled(taskId, true);
    }

    /// @notice The client disputes a submitted result inside the review window; the arbiter then decides.
    function dispute(uint256 taskId, bytes32 reasonHash) external {
        Task storage t = _existing(taskId);
        if (msg.sender != t.client) revert TaskMarketNotClient(taskId, msg.sender);
        if (t.state != State.Submitted) revert TaskMarketWrongState(taskId, _effectiveState(t));
        uint32 reviewDeadline = t.settleDeadline;
        if (block.timestamp > reviewDeadline) revert TaskMarketDeadlinePassed(taskId, reviewDeadline);
        uint32 arbitrationDeadline = uint32(block.timestamp + t.arbitrationWindow);
        t.state = State.Disputed;
        t.settleDeadline = arbitrationDeadline;
        emit TaskDisputed(taskId, reasonHash, arbitrationDeadline);
    }

    /// @notice The arbiter rules on a dispute inside the arbitration window.
    function resolve(uint256 taskId, bool minersWin) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.arbiter) revert TaskMarketNotArbiter(taskId, msg.sender);
        if (t.state != State.Disputed) revert TaskMarketWrongState(taskId, _effectiveState(t));
        uint32 arbitrationDeadline = t.settleDeadline;
        if (block.timestamp > arbitrationDeadline) revert TaskMarketDeadlinePassed(taskId, arbitrationDeadline);
        if (minersWin) {
            _payMiners(taskId, t);
        } else {
            _payClient(taskId, t, State.Settled, 0);
        }
        emit DisputeResolved(taskId, msg.sender, minersWin);
        emit TaskSettled(taskId, minersWin);
    }

    /// @notice A member of a RUNNING group says, inside the work window, that it is still there.
    /// If the task expires without a result while some member stayed silent, the bonds of the
    /// members who checked in come back to them and only the silent members' bonds go to the
    /// client: bonds punish a member who vanished, not the ones it left behind. If every member
    /// checked in, nobody vanished and every bond goes to the client. Every member still counts
    /// the task as failed.
    function checkIn(uint256 taskId) external {
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        if (state != State.Running) revert TaskMarketWrongState(taskId, state);
        uint32 workDeadline = _workDeadline(t);
        if (block.timestamp > workDeadline) revert TaskMarketDeadlinePassed(taskId, workDeadline);
        uint8 n = t.claimed;
        mapping(uint256 => Member) storage members = _members[taskId];
        for (uint8 i; i < n; ++i) {
            if (members[i].account != msg.sender) continue;
            uint256 bits = _checkedIn[taskId];
            if (bits & (uint256(1) << i) != 0) revert TaskMarketAlreadyCheckedIn(taskId, msg.sender);
            _checkedIn[taskId] = bits | (uint256(1) << i);
            emit MemberCheckedIn(taskId, msg.sender, i);
            return;
        }
        revert TaskMarketNotMember(taskId, msg.sender);
    }

    /// @notice Anyone closes a task that ran out of time: OPEN with no claim after the claim
    /// deadline (reward refunded), or RUNNING without a result after the work deadline (reward
    /// and the bonds of the members who did not check in credited to the client, the others'
    /// bonds back to them; every bond to the client if all checked in). `bondsSlashed` says
    /// whether any bond went to the client.
    function expire(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        if (state == State.Open) {
            uint32 claimDeadline = t.claimDeadline;
            if (block.timestamp <= claimDeadline) revert TaskMarketDeadlineNotReached(taskId, claimDeadline);
            // Past the claim deadline an OPEN task has no claim (else it would be RUNNING).
            t.state = State.Expired;
            _credit(t.client, _tokenOf(t.tokenId), t.reward);
            emit TaskExpired(taskId, false);
        } else if (state == State.Running) {
            uint32 workDeadline = _workDeadline(t);
            if (block.timestamp <= workDeadline) revert TaskMarketDeadlineNotReached(taskId, workDeadline);
            // Members who checked in are spared only if someone else stayed silent: a group
            // that is all present and still delivers nothing forfeits every bond.
            uint256 spared = _checkedIn[taskId];
            if (spared == (uint256(1) << t.claimed) - 1) spared = 0;
            uint256 slashed = _payClient(taskId, t, State.Expired, spared);
            emit TaskExpired(taskId, slashed != 0);
        } else {
            revert TaskMarketWrongState(taskId, state);
        }
    }

    /// @notice The client withdraws an OPEN task before anyone claimed it and before its claim deadline.
    function cancel(uint256 taskId) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.client) revert TaskMarketNotClient(taskId, msg.sender);
        if (t.state != State.Open) revert TaskMarketWrongState(taskId, t.state);
        uint32 claimDeadline = t.claimDeadline;
        if (block.timestamp > claimDeadline) revert TaskMarketDeadlinePassed(taskId, claimDeadline);
        if (t.claimed != 0) revert TaskMarketClaimsExist(taskId, t.claimed);
        t.state = State.Cancelled;
        _credit(msg.sender, _tokenOf(t.tokenId), t.reward);
        emit TaskCancelled(taskId);
    }

    /// @notice Pays out the caller's whole credit in `token` (address(0) = the native coin).
    function withdraw(address token) external nonReentrant {
        uint256 amount;
        if (token == address(0)) {
            Account storage a = _accounts[msg.sender];
            amount = a.nativeCredit;
            if (amount == 0) revert TaskMarketNothingToWithdraw(msg.sender, token);
            a.nativeCredit = 0;
        } else {
            amount = _tokenCredits[msg.sender][token];
            if (amount == 0) revert TaskMarketNothingToWithdraw(msg.sender, token);
            _tokenCredits[msg.sender][token] = 0;
        }
        emit Withdrawn(msg.sender, token, amount);
        if (token == address(0)) {
            (bool ok,) = payable(msg.sender).call{value: amount}("");
            if (!ok) revert TaskMarketNativeTransferFailed(msg.sender, amount);
        } else {
            IERC20(token).safeTransfer(msg.sender, amount);
        }
    }

    // ---------------------------------------------------------------- views

    function endpointOf(address miner) external view returns (string memory) {
        return _endpoints[miner];
    }

    function taskCount() external view returns (uint256) {
        return _taskCount;
    }

    /// @notice The task with its effective state (see the contract notice for the implicit start).
    function getTask(uint256 taskId) external view returns (TaskView memory v) {
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        v.client = t.client;
        v.token = _tokenOf(t.tokenId);
        v.reward = t.reward;
        v.bond = t.bond;
        v.arbiter = t.arbiter;
        v.slots = t.slots;
        v.claimed = t.claimed;
        v.state = state;
        v.claimDeadline = t.claimDeadline;
        if (t.claimed != 0 && state != State.Open) v.workDeadline = _workDeadline(t);
        if (state == State.Submitted || state == State.Disputed) v.settleDeadline = t.settleDeadline;
        v.workWindow = t.workWindow;
        v.reviewWindow = t.reviewWindow;
        v.arbitrationWindow = t.arbitrationWindow;
        v.specHash = t.specHash;
        v.resultRoot = t.resultRoot;
    }

    function stateOf(uint256 taskId) external view returns (State) {
        return _effectiveState(_existing(taskId));
    }

    /// @notice The group in slot order; slot 0 is the leader.
    function membersOf(uint256 taskId) external view returns (address[] memory group) {
        uint256 n = _existing(taskId).claimed;
        group = new address[](n);
        for (uint256 i; i < n; ++i) {
            group[i] = _members[taskId][i].account;
        }
    }

    /// @notice Whether `miner` is a member of the task that checked in (see {checkIn}).
    function isCheckedIn(uint256 taskId, address miner) external view returns (bool) {
        uint256 bits = _checkedIn[taskId];
        uint256 n = _tasks[taskId].claimed;
        mapping(uint256 => Member) storage members = _members[taskId];
        for (uint256 i; i < n; ++i) {
            if (members[i].account == miner) return bits & (uint256(1) << i) != 0;
        }
        return false;
    }

    function creditOf(address account, address token) external view returns (uint256) {
        if (token == address(0)) return _accounts[account].nativeCredit;
        return _tokenCredits[account][token];
    }

    function reputationOf(address miner) external view returns (uint32 completed, uint32 failed, uint32 disputesLost) {
        Account storage a = _accounts[miner];
        return (a.completed, a.failed, a.disputesLost);
    }

    /// @notice The EIP-712 digest every member signs for {submitResult}.
    function resultDigest(uint256 taskId, bytes32 resultRoot, uint96[] calldata shares)
        external
        view
        returns (bytes32)
    {
        return _resultDigest(taskId, resultRoot, shares);
    }

    // ---------------------------------------------------------------- internals

    function _checkParams(TaskParams calldata p) private view {
        if (p.reward == 0) revert TaskMarketInvalidReward(p.reward);
        if (p.slots == 0 || p.slots > MAX_SLOTS) revert TaskMarketInvalidSlots(p.slots);
        if (p.claimWindow == 0) revert TaskMarketInvalidWindow("claimWindow", p.claimWindow);
        if (p.workWindow == 0) revert TaskMarketInvalidWindow("workWindow", p.workWindow);
        if (p.reviewWindow == 0) revert TaskMarketInvalidWindow("reviewWindow", p.reviewWindow);
        if (p.arbitrationWindow == 0) revert TaskMarketInvalidWindow("arbitrationWindow", p.arbitrationWindow);
        if (p.arbiter == address(0) || p.arbiter == msg.sender) revert TaskMarketInvalidArbiter(p.arbiter);
        uint256 latest = block.timestamp + p.claimWindow + p.workWindow + p.reviewWindow + p.arbitrationWindow;
        if (latest > type(uint32).max) revert TaskMarketBeyondTimeHorizon(latest);
    }

    /// @dev The id of `token`, registering it on first use (the native coin is 0).
    function _tokenIdFor(address token) private returns (uint40 tokenId) {
        if (token == address(0)) return 0;
        tokenId = _tokenIds[token];
        if (tokenId == 0) {
            tokenId = ++_tokenCount;
            _tokens[tokenId] = token;
            _tokenIds[token] = tokenId;
        }
    }

    function _tokenOf(uint40 tokenId) private view returns (address) {
        return tokenId == 0 ? address(0) : _tokens[tokenId];
    }

    function _emitPosted(uint256 taskId, uint32 claimDeadline, TaskParams calldata p, string calldata specURI)
        private
    {
        emit TaskPosted(
            taskId,
            msg.sender,
            p.token,
            p.reward,
            p.bond,
            p.slots,
            claimDeadline,
            p.workWindow,
            p.reviewWindow,
            p.arbitrationWindow,
            p.arbiter,
            p.specHash,
            p.validationHash,
            specURI
        );
    }

    function _existing(uint256 taskId) private view returns (Task storage t) {
        t = _tasks[taskId];
        if (t.client == address(0)) revert TaskMarketUnknownTask(taskId);
    }

    /// @dev The stored state, except that an OPEN task with claims is RUNNING once its claim window ended.
    function _effectiveState(Task storage t) private view returns (State state) {
        state = t.state;
        if (state == State.Open && t.claimed != 0 && block.timestamp > t.claimDeadline) state = State.Running;
    }

    /// @dev The work deadline of a started task: stored when the group filled, implied otherwise.
    function _workDeadline(Task storage t) private view returns (uint32) {
        uint32 stored = t.workDeadline;
        if (stored != 0) return stored;
        return t.claimDeadline + t.workWindow;
    }

    function _resultDigest(uint256 taskId, bytes32 resultRoot, uint96[] calldata shares)
        private
        view
        returns (bytes32)
    {
        bytes32 sharesHash = keccak256(abi.encodePacked(shares));
        return _hashTypedDataV4(keccak256(abi.encode(RESULT_TYPEHASH, taskId, resultRoot, sharesHash)));
    }

    /// @dev submitResult's checks and effects: RUNNING, inside the work window, called by the
    /// leader, a non-zero root and a signed split. Returns the review deadline it set.
    function _takeResult(uint256 taskId, bytes32 resultRoot, uint96[] calldata shares, bytes[] calldata signatures)
        private
        returns (uint32 reviewDeadline)
    {
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        if (state != State.Running) revert TaskMarketWrongState(taskId, state);
        uint32 workDeadline = _workDeadline(t);
        if (block.timestamp > workDeadline) revert TaskMarketDeadlinePassed(taskId, workDeadline);
        if (msg.sender != _members[taskId][0].account) revert TaskMarketNotLeader(taskId, msg.sender);
        if (resultRoot == bytes32(0)) revert TaskMarketZeroResultRoot(taskId);
        _recordShares(taskId, t, resultRoot, shares, signatures);

        reviewDeadline = uint32(block.timestamp + t.reviewWindow);
        t.state = State.Submitted;
        t.workDeadline = workDeadline;
        t.settleDeadline = reviewDeadline;
        t.resultRoot = resultRoot;
    }

    /// @dev Checks the split (one share per member, summing to the reward) and that member i
    /// signed it, then stores each member's share for settlement.
    function _recordShares(
        uint256 taskId,
        Task storage t,
        bytes32 resultRoot,
        uint96[] calldata shares,
        bytes[] calldata signatures
    ) private {
        uint256 n = t.claimed;
        if (shares.length != n || signatures.length != n) {
            revert TaskMarketLengthMismatch(taskId, n, shares.length, signatures.length);
        }
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            sum += shares[i];
        }
        if (sum != t.reward) revert TaskMarketBadShares(taskId, sum, t.reward);
        bytes32 digest = _resultDigest(taskId, resultRoot, shares);
        mapping(uint256 => Member) storage members = _members[taskId];
        for (uint256 i; i < n; ++i) {
            Member storage m = members[i];
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signatures[i]);
            if (err != ECDSA.RecoverError.NoError || signer != m.account) revert TaskMarketBadSignature(taskId, i);
            m.share = shares[i];
        }
    }

    /// @dev Miners win: each member gets its share plus its bond back and one more completed task.
    function _payMiners(uint256 taskId, Task storage t) private {
        t.state = State.Settled;
        uint256 n = t.claimed;
        address token = _tokenOf(t.tokenId);
        uint256 bond = t.bond;
        mapping(uint256 => Member) storage members = _members[taskId];
        for (uint256 i; i < n; ++i) {
            Member storage m = members[i];
            address account = m.account;
            uint256 amount = m.share + bond;
            Account storage a = _accounts[account];
            a.completed += 1;
            if (token == address(0)) {
                // casting to 'uint152' is safe because amount <= 2 * type(uint96).max
                // forge-lint: disable-next-line(unsafe-typecast)
                a.nativeCredit += uint152(amount);
            } else {
                _tokenCredits[account][token] += amount;
            }
        }
    }

    /// @dev Client wins (lost dispute or missed work deadline): the reward and the bond of every
    /// member outside `spared` (slot bits: those who checked in before an expiry; none after a
    /// lost dispute) go to the client; members in `spared` get their own bond back.
    function _payClient(uint256 taskId, Task storage t, State terminal, uint256 spared)
        private
        returns (uint256 slashed)
    {
        t.state = terminal;
        uint256 n = t.claimed;
        address token = _tokenOf(t.tokenId);
        uint256 bond = t.bond;
        mapping(uint256 => Member) storage members = _members[taskId];
        for (uint256 i; i < n; ++i) {
            address account = members[i].account;
            Account storage a = _accounts[account];
            if (terminal == State.Expired) {
                a.failed += 1;
            } else {
                a.disputesLost += 1;
            }
            if (spared & (uint256(1) << i) != 0) {
                _credit(account, token, bond);
            } else {
                slashed += bond;
            }
        }
        _credit(t.client, token, uint256(t.reward) + slashed);
    }

    function _credit(address account, address token, uint256 amount) private {
        if (token == address(0)) {
            // casting to 'uint152' is safe because amount <= 33 * type(uint96).max (reward + 32 bonds)
            // forge-lint: disable-next-line(unsafe-typecast)
            _accounts[account].nativeCredit += uint152(amount);
        } else {
            _tokenCredits[account][token] += amount;
        }
    }

    /// @dev Pulls exactly `amount` of `token` from the caller; a token that delivers less (fee on
    /// transfer, rebasing) is refused, because the escrow must hold what it promises to pay.
    function _pullToken(address token, uint256 amount) private {
        if (amount == 0) return;
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(msg.sender, address(this), amount);
        uint256 balance = erc20.balanceOf(address(this));
        uint256 received = balance > before ? balance - before : 0;
        if (received != amount) revert TaskMarketFeeOnTransfer(token, amount, received);
    }
}
