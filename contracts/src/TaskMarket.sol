// SPDX-License-Identifier: MIT
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/**
 * @title TaskMarket (v2)
 * @notice Escrow for MANTA AutoML tasks. A client posts a task with a reward; registered miners
 * claim its slots with a bond; any member submits the result root signed by a strict majority
 * of the group; the client accepts (or disputes before the arbiter), or the review window
 * passes. Every state has a deadline and a way out.
 *
 * The money rules, written so that nobody profits from another's loss:
 * - The reward is split equally over the slots, fixed when the task is posted (slot 0 takes
 *   the rounding remainder). A member is paid its share only if it signed the result (at submit
 *   or later, with {endorse}); no other member can take a non-signer's share, so leaving a
 *   member out of the signatures gains the others nothing. A share nobody endorsed by the
 *   settle deadline goes back to the client: it paid for a result, not for a slot.
 * - A bond is never credited to the client or the arbiter. A forfeited bond is burned: it
 *   stays in the contract for ever, counted by {burnedOf}.
 * - A member keeps its bond when it signed a result the miners won, or when it checked in
 *   ({checkIn}, committing to evidence of its work) and did not sign a result that lost its
 *   dispute. A member that never showed up (no signature, no check-in) loses it.
 * - A member left out of a submitted result keeps until the settle deadline (the end of the
 *   review window, or of the arbitration window after a dispute) to endorse the result (share
 *   and bond) or to check in (bond), even after the client accepted early; only then does
 *   {sweep} close the task. A hostile majority cannot burn an honest member's bond, nor take
 *   back its share.
 * - Payouts are pushed inside the settling transaction; a transfer that fails is credited
 *   instead, for {withdraw}.
 *
 * The group is kept as a hash chain in one slot (`group = keccak(group, member)` per claim);
 * calls that need the members take them as calldata and check them against it. Reputation is
 * not stored: the indexer weighs it from the events (value and distinct clients).
 *
 * Time-based transition: an OPEN task whose claim window ends with at least one claim (but with
 * free slots left) is RUNNING from then on, with workDeadline = claimDeadline + workWindow.
 * Deadlines are inclusive for the party acting inside a window and exclusive for the exits that
 * follow it, so at every moment exactly one side of each deadline applies.
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
        bytes32 resultRoot;
        bytes32 group;
        bool minersPaid;
        bool closed; // settled and nothing left to claim late (everyone signed, or swept)
        uint32 signedSlots;
        uint32 presentSlots;
    }

    /// @dev Five slots per task (the spec and validation hashes live in TaskPosted only). Everything that changes after posting, except the group and the
    /// result root, lives in slot 2, so each transition rewrites one warm slot.
    struct Task {
        address client; // slot 0
        uint96 reward;
        address arbiter; // slot 1
        uint96 bond;
        uint16 tokenId; // slot 2
        uint8 slots;
        uint8 claimed;
        State state;
        uint8 flags;
        uint32 claimDeadline;
        uint32 workDeadline; // 0 until the group fills (or a result arrives after an implicit start)
        uint32 settleDeadline; // review deadline while SUBMITTED, arbitration deadline after a dispute
        uint32 workWindow;
        uint32 reviewWindow;
        uint32 arbitrationWindow;
        bytes32 group; // slot 3: keccak chain of the members in slot order
        bytes32 resultRoot; // slot 4
    }

    /// @dev Per account: registration and the native-coin credit of a push that failed.
    struct Account {
        bool registered;
        uint248 nativeCredit;
    }

    uint8 public constant MAX_SLOTS = 32;
    uint256 public constant MAX_ENDPOINT_BYTES = 256;
    uint32 public constant MAX_CLAIM_WINDOW = 30 days;
    uint32 public constant MAX_WORK_WINDOW = 180 days;
    uint32 public constant MAX_REVIEW_WINDOW = 30 days;
    uint32 public constant MAX_ARBITRATION_WINDOW = 30 days;
    /// @notice A bond is at least 1/MIN_BOND_DIVISOR of a slot's share (and never zero): a
    /// member that claims and vanishes always loses something.
    uint256 public constant MIN_BOND_DIVISOR = 100;
    /// @dev Gas forwarded to a payout; a recipient that needs more (or reverts) gets a credit.
    uint256 private constant PUSH_GAS = 30_000;
    uint256 private constant TOKEN_PUSH_GAS = 100_000;
    bytes32 public constant RESULT_TYPEHASH = keccak256("Result(uint256 taskId,bytes32 resultRoot)");

    uint8 private constant FLAG_MINERS_PAID = 1; // settled in the miners' favour
    uint8 private constant FLAG_ALL_SIGNED = 2; // every member signed at submit: no marks slot
    uint8 private constant FLAG_SWEPT = 4; // what the left-out members did not claim is closed

    uint64 private _taskCount;
    uint16 private _tokenCount;
    mapping(uint256 taskId => Task) private _tasks;
    /// @dev Bits 0-31: slot i signed the result; bits 32-63: slot i checked in.
    mapping(uint256 taskId => uint256 marks) private _marks;
    mapping(address account => Account) private _accounts;
    mapping(address account => string) private _endpoints;
    mapping(address account => mapping(address token => uint256)) private _tokenCredits;
    mapping(address token => uint256) private _burned;
    mapping(uint16 tokenId => address) private _tokens;
    mapping(address token => uint16 tokenId) private _tokenIds;

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
        address indexed submitter,
        bytes32 resultRoot,
        uint32 signedSlots,
        uint64 reviewDeadline,
        string resultURI
    );
    event ResultEndorsed(uint256 indexed taskId, address indexed miner, uint8 slot);
    event TaskDisputed(uint256 indexed taskId, bytes32 reasonHash, uint64 arbitrationDeadline);
    event DisputeResolved(uint256 indexed taskId, address indexed arbiter, bool minersWon);
    event TaskSettled(uint256 indexed taskId, bool minersPaid);
    event TaskCancelled(uint256 indexed taskId);
    event TaskExpired(uint256 indexed taskId, uint256 burned);
    event MemberCheckedIn(uint256 indexed taskId, address indexed miner, uint8 slot, bytes32 evidence);
    event Burned(uint256 indexed taskId, address indexed token, uint256 amount);
    event PaymentDeferred(address indexed account, address indexed token, uint256 amount);
    event Withdrawn(address indexed account, address indexed token, uint256 amount);

    error TaskMarketUnknownTask(uint256 taskId);
    error TaskMarketWrongState(uint256 taskId, State state);
    error TaskMarketNotClient(uint256 taskId, address caller);
    error TaskMarketNotArbiter(uint256 taskId, address caller);
    error TaskMarketDeadlinePassed(uint256 taskId, uint64 deadline);
    error TaskMarketDeadlineNotReached(uint256 taskId, uint64 deadline);
    error TaskMarketWrongPayment(uint256 expected, uint256 sent);
    error TaskMarketFeeOnTransfer(address token, uint256 expected, uint256 received);
    error TaskMarketNativeTransferFailed(address account, uint256 amount);
    error TaskMarketAlreadyClaimed(uint256 taskId, address miner);
    error TaskMarketPartyCannotClaim(uint256 taskId, address miner);
    error TaskMarketClaimsExist(uint256 taskId, uint8 claimed);
    error TaskMarketWrongGroup(uint256 taskId, uint256 members);
    error TaskMarketLengthMismatch(uint256 taskId, uint256 members, uint256 signatures);
    error TaskMarketNoQuorum(uint256 taskId, uint256 signed, uint256 needed);
    error TaskMarketBadSignature(uint256 taskId, uint256 index);
    error TaskMarketZeroResultRoot(uint256 taskId);
    error TaskMarketNothingToWithdraw(address account, address token);
    error TaskMarketInvalidReward(uint256 reward);
    error TaskMarketInvalidSlots(uint8 slots);
    error TaskMarketInvalidWindow(string name, uint32 value);
    error TaskMarketBondTooLow(uint256 bond, uint256 minimum);
    error TaskMarketInvalidArbiter(address arbiter);
    error TaskMarketBeyondTimeHorizon(uint256 latestDeadline);
    error TaskMarketInvalidEndpoint(uint256 length);
    error TaskMarketNotMember(uint256 taskId, address caller);
    error TaskMarketAlreadyCheckedIn(uint256 taskId, address miner);
    error TaskMarketAlreadySigned(uint256 taskId, address miner);
    error TaskMarketNoEvidence(uint256 taskId);
    error TaskMarketNothingToSweep(uint256 taskId);
    error TaskMarketTooManyTokens();

    constructor() EIP712("MANTA TaskMarket", "2") {}

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
        _emitPosted(taskId, claimDeadline, p, specURI);
        if (p.token != address(0)) _pullToken(p.token, p.reward);
    }

    /// @notice Takes the next free slot of an OPEN task, paying the bond; `group` is the current
    /// group in slot order (from the TaskClaimed events), checked against the stored chain so
    /// that an account holds at most one slot. The slot that fills the group starts the work.
    /// Not guarded against re-entry: its only external call (an ERC-20 pull) comes after every
    /// effect, and re-entering can only claim another slot under the same rules.
    function claim(uint256 taskId, address[] calldata group) external payable {
        Task storage t = _existing(taskId);
        if (t.state != State.Open) revert TaskMarketWrongState(taskId, t.state);
        uint32 claimDeadline = t.claimDeadline;
        if (block.timestamp > claimDeadline) revert TaskMarketDeadlinePassed(taskId, claimDeadline);
        if (msg.sender == t.client || msg.sender == t.arbiter) revert TaskMarketPartyCannotClaim(taskId, msg.sender);
        address token = _tokenOf(t.tokenId);
        uint96 bond = t.bond;
        if (token == address(0)) {
            if (msg.value != bond) revert TaskMarketWrongPayment(bond, msg.value);
        } else if (msg.value != 0) {
            revert TaskMarketWrongPayment(0, msg.value);
        }
        _checkGroup(taskId, t, group);
        if (_indexOf(group, msg.sender) < group.length) revert TaskMarketAlreadyClaimed(taskId, msg.sender);

        uint8 slot = t.claimed;
        t.group = _link(t.group, msg.sender);
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

    /// @notice Any member submits the result root with the signatures of a strict majority of
    /// the group: `signatures[i]` is member i's EIP-712 signature over (taskId, resultRoot), or
    /// empty when member i did not sign; the caller's own entry is not needed (sending is signing).
    function submitResult(
        uint256 taskId,
        bytes32 resultRoot,
        string calldata resultURI,
        address[] calldata members,
        bytes[] calldata signatures
    ) external {
        (uint32 signedSlots, uint32 reviewDeadline) = _takeResult(taskId, resultRoot, members, signatures);
        emit ResultSubmitted(taskId, msg.sender, resultRoot, signedSlots, reviewDeadline, resultURI);
    }

    /// @notice The client accepts a submitted result: each signer gets its share and its bond.
    function accept(uint256 taskId, address[] calldata members) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.client) revert TaskMarketNotClient(taskId, msg.sender);
        if (t.state != State.Submitted) revert TaskMarketWrongState(taskId, _effectiveState(t));
        _checkGroup(taskId, t, members);
        _settle(taskId, t, members, true);
    }

    /// @notice Anyone settles in the miners' favour once the client let the review window pass,
    /// or the arbiter let the arbitration window pass.
    function finalize(uint256 taskId, address[] calldata members) external nonReentrant {
        Task storage t = _existing(taskId);
        State state = t.state;
        if (state != State.Submitted && state != State.Disputed) {
            revert TaskMarketWrongState(taskId, _effectiveState(t));
        }
        uint32 deadline = t.settleDeadline;
        if (block.timestamp <= deadline) revert TaskMarketDeadlineNotReached(taskId, deadline);
        _checkGroup(taskId, t, members);
        _settle(taskId, t, members, true);
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

    /// @notice The arbiter rules on a dispute inside the arbitration window. Miners win: as
    /// {accept}. Client wins: the reward goes back to the client and the signers' bonds are burned.
    function resolve(uint256 taskId, bool minersWin, address[] calldata members) external nonReentrant {
        Task storage t = _existing(taskId);
        if (msg.sender != t.arbiter) revert TaskMarketNotArbiter(taskId, msg.sender);
        if (t.state != State.Disputed) revert TaskMarketWrongState(taskId, _effectiveState(t));
        uint32 arbitrationDeadline = t.settleDeadline;
        if (block.timestamp > arbitrationDeadline) revert TaskMarketDeadlinePassed(taskId, arbitrationDeadline);
        _checkGroup(taskId, t, members);
        emit DisputeResolved(taskId, msg.sender, minersWin);
        _settle(taskId, t, members, minersWin);
    }

    /// @notice A member says it is there and working, committing to `evidence` (the hash of its
    /// latest checkpoint or progress root). While RUNNING (until the work deadline) this keeps its
    /// bond if the task expires. A member left out of a submitted result may check in until the
    /// settle deadline, which keeps its bond (returned at once if the task already settled).
    function checkIn(uint256 taskId, address[] calldata members, bytes32 evidence) external nonReentrant {
        if (evidence == bytes32(0)) revert TaskMarketNoEvidence(taskId);
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        uint32 deadline;
        if (state == State.Running) {
            deadline = _workDeadline(t);
        } else if (state == State.Submitted || state == State.Disputed || _lateClaimsOpen(t)) {
            deadline = t.settleDeadline;
        } else {
            revert TaskMarketWrongState(taskId, state);
        }
        if (block.timestamp > deadline) revert TaskMarketDeadlinePassed(taskId, deadline);
        _checkGroup(taskId, t, members);
        uint256 slot = _memberSlot(taskId, members);
        uint256 marks = _marksOf(taskId, t);
        uint256 bit = uint256(1) << (32 + slot);
        if (marks & bit != 0 || marks & (uint256(1) << slot) != 0) {
            revert TaskMarketAlreadyCheckedIn(taskId, msg.sender);
        }
        _marks[taskId] = marks | bit;
        // casting to 'uint8' is safe because slot < MAX_SLOTS
        // forge-lint: disable-next-line(unsafe-typecast)
        emit MemberCheckedIn(taskId, msg.sender, uint8(slot), evidence);
        if (state == State.Settled) _pay(_tokenOf(t.tokenId), msg.sender, t.bond);
    }

    /// @notice A member left out of a submitted result signs it late (until the settle deadline):
    /// it joins the signers, and is paid its share and bond at once if the miners already won.
    function endorse(uint256 taskId, address[] calldata members) external nonReentrant {
        Task storage t = _existing(taskId);
        State state = t.state;
        bool settled = state == State.Settled;
        if (!(state == State.Submitted || state == State.Disputed || (settled && t.flags & FLAG_MINERS_PAID != 0))) {
            revert TaskMarketWrongState(taskId, _effectiveState(t));
        }
        uint32 deadline = t.settleDeadline;
        if (block.timestamp > deadline) revert TaskMarketDeadlinePassed(taskId, deadline);
        _checkGroup(taskId, t, members);
        uint256 slot = _memberSlot(taskId, members);
        uint256 marks = _marksOf(taskId, t);
        if (marks & (uint256(1) << slot) != 0) revert TaskMarketAlreadySigned(taskId, msg.sender);
        _marks[taskId] = marks | (uint256(1) << slot);
        // casting to 'uint8' is safe because slot < MAX_SLOTS
        // forge-lint: disable-next-line(unsafe-typecast)
        emit ResultEndorsed(taskId, msg.sender, uint8(slot));
        if (settled) {
            uint256 amount = _shareOf(t, slot);
            if (marks & (uint256(1) << (32 + slot)) == 0) amount += t.bond; // its bond was held
            _pay(_tokenOf(t.tokenId), msg.sender, amount);
        }
    }

    /// @notice Anyone, after the settle deadline of a task settled before it: closes what the
    /// members left out of the result did not claim (their shares back to the client, the bonds
    /// of those that never showed up burned).
    function sweep(uint256 taskId, address[] calldata members) external nonReentrant {
        Task storage t = _existing(taskId);
        if (t.state != State.Settled || t.flags & (FLAG_SWEPT | FLAG_ALL_SIGNED) != 0) {
            revert TaskMarketNothingToSweep(taskId);
        }
        uint32 deadline = t.settleDeadline;
        if (block.timestamp <= deadline) revert TaskMarketDeadlineNotReached(taskId, deadline);
        _checkGroup(taskId, t, members);
        _closeUnclaimed(taskId, t, _marks[taskId]);
    }

    /// @notice Anyone closes a task that ran out of time: OPEN with no claim after the claim
    /// deadline (reward refunded), or RUNNING without a result after the work deadline (reward
    /// refunded; members who checked in get their bond back, the others' bonds are burned).
    function expire(uint256 taskId, address[] calldata members) external nonReentrant {
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        address token = _tokenOf(t.tokenId);
        if (state == State.Open) {
            uint32 claimDeadline = t.claimDeadline;
            if (block.timestamp <= claimDeadline) revert TaskMarketDeadlineNotReached(taskId, claimDeadline);
            // Past the claim deadline an OPEN task has no claim (else it would be RUNNING).
            t.state = State.Expired;
            emit TaskExpired(taskId, 0);
            _pay(token, t.client, t.reward);
        } else if (state == State.Running) {
            uint32 workDeadline = _workDeadline(t);
            if (block.timestamp <= workDeadline) revert TaskMarketDeadlineNotReached(taskId, workDeadline);
            _checkGroup(taskId, t, members);
            t.state = State.Expired;
            t.workDeadline = workDeadline;
            uint256 present = _marks[taskId] >> 32;
            uint256 bond = t.bond;
            uint256 burned;
            for (uint256 i; i < members.length; ++i) {
                if (present & (uint256(1) << i) == 0) burned += bond;
            }
            _burn(taskId, token, burned);
            emit TaskExpired(taskId, burned);
            for (uint256 i; i < members.length; ++i) {
                if (present & (uint256(1) << i) != 0) _pay(token, members[i], bond);
            }
            _pay(token, t.client, t.reward);
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
        emit TaskCancelled(taskId);
        _pay(_tokenOf(t.tokenId), msg.sender, t.reward);
    }

    /// @notice Pays out the caller's credit in `token` (address(0) = the native coin): what a
    /// payout that could not be pushed left behind.
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

    function isRegistered(address miner) external view returns (bool) {
        return _accounts[miner].registered;
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
        v.settleDeadline = t.settleDeadline;
        v.workWindow = t.workWindow;
        v.reviewWindow = t.reviewWindow;
        v.arbitrationWindow = t.arbitrationWindow;
        v.resultRoot = t.resultRoot;
        v.group = t.group;
        v.minersPaid = t.flags & FLAG_MINERS_PAID != 0;
        v.closed = state == State.Settled && !_lateClaimsOpen(t);
        uint256 marks = _marksOf(taskId, t);
        v.signedSlots = uint32(marks);
        v.presentSlots = uint32(marks >> 32);
    }

    function stateOf(uint256 taskId) external view returns (State) {
        return _effectiveState(_existing(taskId));
    }

    /// @notice The hash chain a group of members in slot order makes (what {getTask} holds).
    function groupHash(address[] calldata members) external pure returns (bytes32 h) {
        for (uint256 i; i < members.length; ++i) {
            h = _link(h, members[i]);
        }
    }

    /// @notice Signatures a result needs: a strict majority of a group of `members`.
    function quorum(uint256 members) external pure returns (uint256) {
        return members / 2 + 1;
    }

    function creditOf(address account, address token) external view returns (uint256) {
        if (token == address(0)) return _accounts[account].nativeCredit;
        return _tokenCredits[account][token];
    }

    /// @notice Everything burned in `token` (address(0) = the native coin): held by this
    /// contract for ever, paid to nobody.
    function burnedOf(address token) external view returns (uint256) {
        return _burned[token];
    }

    /// @notice The EIP-712 digest a member signs for {submitResult}.
    function resultDigest(uint256 taskId, bytes32 resultRoot) external view returns (bytes32) {
        return _resultDigest(taskId, resultRoot);
    }

    // ---------------------------------------------------------------- internals

    function _checkParams(TaskParams calldata p) private view {
        if (p.reward == 0) revert TaskMarketInvalidReward(p.reward);
        if (p.slots == 0 || p.slots > MAX_SLOTS) revert TaskMarketInvalidSlots(p.slots);
        _checkWindow("claimWindow", p.claimWindow, MAX_CLAIM_WINDOW);
        _checkWindow("workWindow", p.workWindow, MAX_WORK_WINDOW);
        _checkWindow("reviewWindow", p.reviewWindow, MAX_REVIEW_WINDOW);
        _checkWindow("arbitrationWindow", p.arbitrationWindow, MAX_ARBITRATION_WINDOW);
        uint256 minimum = (uint256(p.reward) + MIN_BOND_DIVISOR * p.slots - 1) / (MIN_BOND_DIVISOR * p.slots);
        if (p.bond < minimum) revert TaskMarketBondTooLow(p.bond, minimum);
        if (p.arbiter == address(0) || p.arbiter == msg.sender) revert TaskMarketInvalidArbiter(p.arbiter);
        uint256 latest = block.timestamp + p.claimWindow + p.workWindow + p.reviewWindow + p.arbitrationWindow;
        if (latest > type(uint32).max) revert TaskMarketBeyondTimeHorizon(latest);
    }

    function _checkWindow(string memory name, uint32 value, uint32 maximum) private pure {
        if (value == 0 || value > maximum) revert TaskMarketInvalidWindow(name, value);
    }

    /// @dev The id of `token`, registering it on first use (the native coin is 0).
    function _tokenIdFor(address token) private returns (uint16 tokenId) {
        if (token == address(0)) return 0;
        tokenId = _tokenIds[token];
        if (tokenId == 0) {
            if (_tokenCount == type(uint16).max) revert TaskMarketTooManyTokens();
            tokenId = ++_tokenCount;
            _tokens[tokenId] = token;
            _tokenIds[token] = tokenId;
        }
    }

    function _tokenOf(uint16 tokenId) private view returns (address) {
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

    /// @dev `members` must be the whole group in slot order.
    function _checkGroup(uint256 taskId, Task storage t, address[] calldata members) private view {
        bytes32 h;
        uint256 n = members.length;
        for (uint256 i; i < n; ++i) {
            h = _link(h, members[i]);
        }
        if (n != t.claimed || h != t.group) revert TaskMarketWrongGroup(taskId, n);
    }

    /// @dev keccak256(abi.encodePacked(h, member)), hashed in scratch space.
    function _link(bytes32 h, address member) private pure returns (bytes32 out) {
        assembly ("memory-safe") {
            mstore(0x00, h)
            mstore(0x20, shl(96, member))
            out := keccak256(0x00, 0x34)
        }
    }

    function _indexOf(address[] calldata members, address account) private pure returns (uint256 i) {
        for (; i < members.length; ++i) {
            if (members[i] == account) return i;
        }
    }

    function _memberSlot(uint256 taskId, address[] calldata members) private view returns (uint256 slot) {
        slot = _indexOf(members, msg.sender);
        if (slot == members.length) revert TaskMarketNotMember(taskId, msg.sender);
    }

    /// @dev The signed (bits 0-31) and checked-in (bits 32-63) slots.
    function _marksOf(uint256 taskId, Task storage t) private view returns (uint256) {
        if (t.flags & FLAG_ALL_SIGNED != 0) return (uint256(1) << t.claimed) - 1;
        return _marks[taskId];
    }

    /// @dev Whether a settled task still takes late check-ins and endorsements.
    function _lateClaimsOpen(Task storage t) private view returns (bool) {
        return t.state == State.Settled && t.flags & (FLAG_SWEPT | FLAG_ALL_SIGNED) == 0;
    }

    function _shareOf(Task storage t, uint256 slot) private view returns (uint256 share) {
        uint256 reward = t.reward;
        uint256 n = t.claimed;
        share = reward / n;
        if (slot == 0) share += reward - share * n;
    }

    function _popcount(uint256 x) private pure returns (uint256 count) {
        for (; x != 0; x &= x - 1) {
            ++count;
        }
    }

    function _resultDigest(uint256 taskId, bytes32 resultRoot) private view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RESULT_TYPEHASH, taskId, resultRoot)));
    }

    /// @dev The slots that signed: the caller (who must be a member) and every non-empty
    /// signature, each of which must recover to its member.
    function _signers(uint256 taskId, bytes32 resultRoot, address[] calldata members, bytes[] calldata signatures)
        private
        view
        returns (uint32 signedSlots)
    {
        uint256 n = members.length;
        if (signatures.length != n) revert TaskMarketLengthMismatch(taskId, n, signatures.length);
        uint256 sender = _memberSlot(taskId, members);
        bytes32 digest = _resultDigest(taskId, resultRoot);
        uint256 bits = uint256(1) << sender;
        for (uint256 i; i < n; ++i) {
            if (i == sender || signatures[i].length == 0) continue;
            (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecoverCalldata(digest, signatures[i]);
            if (err != ECDSA.RecoverError.NoError || signer != members[i]) revert TaskMarketBadSignature(taskId, i);
            bits |= uint256(1) << i;
        }
        // casting to 'uint32' is safe because n <= MAX_SLOTS
        // forge-lint: disable-next-line(unsafe-typecast)
        signedSlots = uint32(bits);
    }

    /// @dev submitResult's checks and effects: RUNNING, inside the work window, a non-zero root,
    /// the whole group, and a strict majority of it signed. Returns the signers and the review deadline.
    function _takeResult(uint256 taskId, bytes32 resultRoot, address[] calldata members, bytes[] calldata signatures)
        private
        returns (uint32 signedSlots, uint32 reviewDeadline)
    {
        Task storage t = _existing(taskId);
        State state = _effectiveState(t);
        if (state != State.Running) revert TaskMarketWrongState(taskId, state);
        uint32 workDeadline = _workDeadline(t);
        if (block.timestamp > workDeadline) revert TaskMarketDeadlinePassed(taskId, workDeadline);
        if (resultRoot == bytes32(0)) revert TaskMarketZeroResultRoot(taskId);
        _checkGroup(taskId, t, members);
        signedSlots = _signers(taskId, resultRoot, members, signatures);
        uint256 count = _popcount(signedSlots);
        uint256 needed = members.length / 2 + 1;
        if (count < needed) revert TaskMarketNoQuorum(taskId, count, needed);

        reviewDeadline = uint32(block.timestamp + t.reviewWindow);
        t.state = State.Submitted;
        t.workDeadline = workDeadline;
        t.settleDeadline = reviewDeadline;
        t.resultRoot = resultRoot;
        if (count == members.length) {
            t.flags |= FLAG_ALL_SIGNED;
        } else {
            _marks[taskId] |= signedSlots;
        }
    }

    /// @dev Settles a SUBMITTED or DISPUTED task. Miners win: each signer gets its share and bond,
    /// each member that checked in (without signing) its bond. Client wins: the reward goes back,
    /// the signers' bonds are burned, each member that checked in gets its bond. What the other
    /// members could still claim waits for the settle deadline; past it, it is closed now.
    function _settle(uint256 taskId, Task storage t, address[] calldata members, bool minersWin) private {
        t.state = State.Settled;
        if (minersWin) t.flags |= FLAG_MINERS_PAID;
        emit TaskSettled(taskId, minersWin);
        address token = _tokenOf(t.tokenId);
        uint256 marks = _marksOf(taskId, t);
        uint256 bond = t.bond;
        uint256 n = members.length;
        uint256 reward = t.reward;
        uint256 share = reward / n;
        uint256 burned;
        for (uint256 i; i < n; ++i) {
            uint256 amount;
            if (marks & (uint256(1) << i) != 0) {
                if (minersWin) amount = (i == 0 ? reward - share * (n - 1) : share) + bond;
                else burned += bond;
            } else if (marks & (uint256(1) << (32 + i)) != 0) {
                amount = bond;
            }
            _pay(token, members[i], amount);
        }
        _burn(taskId, token, burned);
        if (!minersWin) _pay(token, t.client, reward);
        if (t.flags & FLAG_ALL_SIGNED == 0 && block.timestamp > t.settleDeadline) _closeUnclaimed(taskId, t, marks);
    }

    /// @dev Burns the bonds of the members that neither signed nor checked in, and, when the
    /// miners won, pays the shares nobody endorsed back to the client.
    function _closeUnclaimed(uint256 taskId, Task storage t, uint256 marks) private {
        t.flags |= FLAG_SWEPT;
        bool minersWon = t.flags & FLAG_MINERS_PAID != 0;
        uint256 n = t.claimed;
        uint256 burned;
        uint256 refund;
        for (uint256 i; i < n; ++i) {
            if (marks & (uint256(1) << i) != 0) continue; // signed: settled already
            if (minersWon) refund += _shareOf(t, i);
            if (marks & (uint256(1) << (32 + i)) == 0) burned += t.bond;
        }
        address token = _tokenOf(t.tokenId);
        _burn(taskId, token, burned);
        _pay(token, t.client, refund);
    }

    function _burn(uint256 taskId, address token, uint256 amount) private {
        if (amount == 0) return;
        _burned[token] += amount;
        emit Burned(taskId, token, amount);
    }

    /// @dev Pushes `amount` to `to`; a transfer that fails (a reverting or greedy recipient, a
    /// token that blocks it) becomes a credit for {withdraw} instead.
    function _pay(address token, address to, uint256 amount) private {
        if (amount == 0) return;
        bool ok;
        if (token == address(0)) {
            assembly ("memory-safe") {
                ok := call(PUSH_GAS, to, amount, 0, 0, 0, 0)
            }
        } else {
            bytes memory data = abi.encodeCall(IERC20.transfer, (to, amount));
            assembly ("memory-safe") {
                ok := call(TOKEN_PUSH_GAS, token, 0, add(data, 0x20), mload(data), 0, 0x20)
                // A token that returns nothing is fine; one that returns a value must return true.
                if and(ok, gt(returndatasize(), 0)) { ok := eq(mload(0), 1) }
                if and(ok, iszero(returndatasize())) { ok := gt(extcodesize(token), 0) }
            }
        }
        if (!ok) {
            _credit(to, token, amount);
            emit PaymentDeferred(to, token, amount);
        }
    }

    function _credit(address account, address token, uint256 amount) private {
        if (token == address(0)) {
            // casting to 'uint248' is safe because amount <= 33 * type(uint96).max (reward + 32 bonds)
            // forge-lint: disable-next-line(unsafe-typecast)
            _accounts[account].nativeCredit += uint248(amount);
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
