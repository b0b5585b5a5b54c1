# pragma version ~=0.4.3
# pragma optimize gas
"""
@title FLChainCore
@notice The state of FLChain, shared by its two deployed pieces: FLChain (the entry point:
        submit, vote and every view) and FLChainSettlement (the code FLChain runs by
        delegatecall: task and member registration, round settlement, penalties, rewards,
        alarms and payouts). Both initialize this module and declare no storage of their
        own, so they lay storage out identically (the build checks it); splitting the code
        keeps each piece well under the 24,576-byte limit of EIP-170.
@dev Hot paths (submit, vote) pack their state by hand: Vyper does not pack storage, and
     every cold slot costs 2,100 gas to read and 22,100 to create. Per-round, per-member data
     is keyed by rk = task_id << 32 | round.
"""

MAX_MEMBERS: constant(uint256) = 256
MAX_PEER_ID: constant(uint256) = 64
MAX_PEER_PROOF: constant(uint256) = 64
BPS: constant(uint256) = 10000
# Reputation is fixed point: REP_UNIT is a factor of 1.0 (the value a member joins with).
REP_UNIT: constant(uint256) = 1000
REP_MAX: constant(uint256) = 2000
REP_ACCEPT: constant(uint256) = 20
# A rejected update costs more than an accepted one earns, but not much more: robust rules
# (Multi-Krum, Bulyan, trimmed mean) drop some honest updates every round by design.
REP_REJECT: constant(uint256) = 50
REP_BAD_VOTE: constant(uint256) = 50
# An eligible member that commits no update loses REP_NO_SUBMIT in every round that ends
# (finalized or failed); one that does not vote loses REP_NO_VOTE in a round that fails
# while others voted. Raising an alarm bonds REP_ALARM, returned only if the alarm reverts the
# round: an alarm that never reaches the threshold costs its raisers.
REP_NO_SUBMIT: constant(uint256) = 50
REP_NO_VOTE: constant(uint256) = 100
REP_ALARM: constant(uint256) = 100
# A finalized round's vote stays open as a *late vote* until the next round ends (the vote
# that reaches quorum closes the tally, not the duty): an eligible member that voted neither
# in time nor late loses REP_NO_LATE_VOTE when the next round ends, and a late vote for
# another pair than the finalized one costs REP_BAD_VOTE then.
REP_NO_LATE_VOTE: constant(uint256) = 50

# Task status.
TASK_REGISTERING: constant(uint256) = 1
TASK_RUNNING: constant(uint256) = 2
TASK_FINISHED: constant(uint256) = 3
TASK_CLOSED: constant(uint256) = 4

# Round status.
ROUND_OPEN: constant(uint256) = 1
ROUND_FINALIZED: constant(uint256) = 2
ROUND_FAILED: constant(uint256) = 3
ROUND_REVERTED: constant(uint256) = 4
ROUND_ABORTED: constant(uint256) = 5

# Member status.
MEMBER_ACTIVE: constant(uint256) = 1
MEMBER_EJECTED: constant(uint256) = 2
MEMBER_WITHDRAWN: constant(uint256) = 3

# Why a round ended without a global model (RoundFailed.reason).
FAIL_STALLED: constant(uint256) = 1
FAIL_ABORTED_BY_ALARM: constant(uint256) = 2
FAIL_TASK_CLOSED: constant(uint256) = 3

M8: constant(uint256) = 2**8 - 1
M16: constant(uint256) = 2**16 - 1
M32: constant(uint256) = 2**32 - 1
M40: constant(uint256) = 2**40 - 1
M64: constant(uint256) = 2**64 - 1
M96: constant(uint256) = 2**96 - 1
ALL_ONES: constant(uint256) = max_value(uint256)
LOSS_BIAS: constant(int256) = 2**63

# Task state word: status 0..7 | cur_round 8..39 | round_start 40..79 | submit_window 80..111
# | vote_window 112..143 | base_round 144..175 (of the current round, so submit checks it
# without another cold read) | n_members 176..191 | n_active 192..207 | total_rep 208..239
# | min_members 240..255
S_ROUND: constant(uint256) = 8
S_START: constant(uint256) = 40
S_SUBMIT: constant(uint256) = 80
S_VOTE: constant(uint256) = 112
S_BASE: constant(uint256) = 144
S_NMEM: constant(uint256) = 176
S_NACT: constant(uint256) = 192
S_REP: constant(uint256) = 208
S_MINM: constant(uint256) = 240

# Task config word: owner 0..159 | max_members 160..175 | quorum_bps 176..191
# | alarm_bps 192..207 | allowlist 208..215
C_MAXM: constant(uint256) = 160
C_QUORUM: constant(uint256) = 176
C_ALARM: constant(uint256) = 192
C_ALLOW: constant(uint256) = 208

# Task config word 2: alarm_window 0..31 | rep_floor 32..63 | stake 64..159
# | max_samples 160..223 | max_rounds 224..255
C2_FLOOR: constant(uint256) = 32
C2_STAKE: constant(uint256) = 64
C2_MAXS: constant(uint256) = 160
C2_MAXR: constant(uint256) = 224

# Round header: status 0..7 | start 8..47 | finalized_at 48..87 | total_rep 88..119
# | base_round 120..151 | alarm_weight 152..183 | quorum_bps 184..199
H_START: constant(uint256) = 8
H_FINAL: constant(uint256) = 48
H_REP: constant(uint256) = 88
H_BASE: constant(uint256) = 120
H_ALARM: constant(uint256) = 152
H_QUORUM: constant(uint256) = 184

# Member word: status 0..7 | index 8..23 | since_round 24..55
M_INDEX: constant(uint256) = 8
M_SINCE: constant(uint256) = 24

# Reputation deltas of a finalized round, kept so that a revert can undo them: sixteen
# 16-bit fields per word, delta + D_ZERO (a zero field: no delta recorded).
D_ZERO: constant(uint256) = 2**15

# Commit word, keyed by (task, digest) so a digest is committed once per task: samples 0..63
# | base_round 64..95 | loss + 2**63 96..159
U_BASE: constant(uint256) = 64
U_LOSS: constant(uint256) = 96


struct TaskInfo:
    task_id: uint256
    owner: address
    status: uint256
    config_digest: bytes32
    initial_digest: bytes32
    global_digest: bytes32
    global_round: uint256
    min_members: uint256
    max_members: uint256
    submit_window: uint256
    vote_window: uint256
    alarm_window: uint256
    quorum_bps: uint256
    alarm_bps: uint256
    stake: uint256
    max_rounds: uint256
    rep_floor: uint256
    allowlist: bool
    max_samples: uint256
    current_round: uint256
    round_start: uint256
    n_members: uint256
    n_active: uint256
    total_reputation: uint256
    # Economics (wei): the reward pool still to pay (owner escrow, top-ups and forfeits;
    # once settled, the pool left that withdrawals share out, which they do not reduce),
    # the rewards credited to active members, and the stakes and rewards forfeited by
    # ejected members. `settled`: the task ended and its last alarm window closed, so
    # payouts are final and `withdraw` is open.
    reward_pool: uint256
    rewards_paid: uint256
    slashed: uint256
    settled: bool


struct RoundInfo:
    task_id: uint256
    round: uint256
    status: uint256
    start: uint256
    submit_deadline: uint256
    vote_deadline: uint256
    finalized_at: uint256
    base_digest: bytes32
    base_round: uint256
    global_digest: bytes32
    accepted: uint256
    eligible: uint256
    submitted: uint256
    voted: uint256
    alarmed: uint256
    alarm_weight: uint256
    total_reputation: uint256
    quorum_bps: uint256
    remasked: uint256
    sum_digest: bytes32
    # The reward each member in `paid` was credited at finalization (wei; zero: none).
    reward_share: uint256
    paid: uint256


struct MemberInfo:
    index: uint256
    account: address
    peer_id: Bytes[MAX_PEER_ID]
    x25519: bytes32
    status: uint256
    since_round: uint256
    reputation: uint256
    he_key: bytes32
    # Rewards credited (wei); for an ejected member, what it forfeited with its stake.
    earned: uint256
    # What `withdraw` pays this member once the task is settled (stake, earned rewards and
    # its share of the pool left at the end); zero unless active.
    payout: uint256


struct UpdateInfo:
    submitted: bool
    digest: bytes32
    samples: uint256
    base_round: uint256
    loss: int256


struct VoteInfo:
    voted: bool
    digest: bytes32
    accepted: uint256


event TaskCreated:
    task_id: indexed(uint256)
    owner: indexed(address)
    config_digest: bytes32
    initial_digest: bytes32
    min_members: uint256
    max_members: uint256
    submit_window: uint256
    vote_window: uint256
    alarm_window: uint256
    quorum_bps: uint256
    alarm_bps: uint256
    stake: uint256
    max_rounds: uint256
    rep_floor: uint256
    allowlist: bool
    max_samples: uint256
    reward: uint256

event RewardFunded:
    task_id: indexed(uint256)
    funder: indexed(address)
    amount: uint256
    reward_pool: uint256

event AllowlistChanged:
    task_id: indexed(uint256)
    account: indexed(address)
    allowed: bool

event MemberJoined:
    task_id: indexed(uint256)
    account: indexed(address)
    member: indexed(uint256)
    peer_id: Bytes[MAX_PEER_ID]
    x25519: bytes32
    since_round: uint256
    stake: uint256
    he_key: bytes32
    # Ed25519 signature by the peer id's key (flchain.node.peer_proof); nodes verify it and
    # ignore members whose proof fails. Only in the log: nothing on chain can check it.
    peer_proof: Bytes[MAX_PEER_PROOF]

event RoundOpened:
    task_id: indexed(uint256)
    round: indexed(uint256)
    base_digest: bytes32
    base_round: uint256
    eligible: uint256
    total_reputation: uint256
    start: uint256

# base_round and loss are in storage (get_update); leaving them out of the log keeps a
# submit under 80k gas.
event UpdateCommitted:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    digest: bytes32
    samples: uint256

# Secure mode: the caller re-committed its update re-masked over the round's submitters.
event UpdateRemasked:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    digest: bytes32

# Secure mode: the round's decryptor published the digest of its decrypted sum and proof.
event SumPublished:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    digest: bytes32

event VoteCast:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    digest: bytes32
    accepted: uint256
    weight: uint256
    tally: uint256

event RoundFinalized:
    task_id: indexed(uint256)
    round: indexed(uint256)
    global_digest: bytes32
    accepted: uint256
    tally: uint256
    total_reputation: uint256

# A finalized round credited `share` wei to each member of `paid`.
event RoundPaid:
    task_id: indexed(uint256)
    round: indexed(uint256)
    paid: uint256
    share: uint256
    reward_pool: uint256

event ReputationChanged:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    old: uint256
    new: uint256

event MemberEjected:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    account: address
    reputation: uint256
    # Stake and earned rewards moved to the reward pool.
    forfeited: uint256

# A revert restored a member ejected by the reverted round (or by its alarm bond).
event MemberReinstated:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    reputation: uint256
    restored: uint256

event AlarmRaised:
    task_id: indexed(uint256)
    round: indexed(uint256)
    member: indexed(uint256)
    weight: uint256
    alarm_weight: uint256

event RoundReverted:
    task_id: indexed(uint256)
    round: indexed(uint256)
    restored_digest: bytes32
    restored_round: uint256
    alarm_weight: uint256
    clawed_back: uint256

event RoundFailed:
    task_id: indexed(uint256)
    round: indexed(uint256)
    reason: uint256

event TaskEnded:
    task_id: indexed(uint256)
    status: uint256
    global_digest: bytes32
    global_round: uint256

event Withdrawn:
    task_id: indexed(uint256)
    account: indexed(address)
    member: indexed(uint256)
    stake: uint256
    reward: uint256

# Nobody earned anything by the end: the reward pool goes back to the owner.
event RefundClaimed:
    task_id: indexed(uint256)
    owner: indexed(address)
    amount: uint256


task_count: uint256

_state: HashMap[uint256, uint256]
_cfg: HashMap[uint256, uint256]
_cfg2: HashMap[uint256, uint256]
_config_digest: HashMap[uint256, bytes32]
_initial_digest: HashMap[uint256, bytes32]
_good_digest: HashMap[uint256, bytes32]
_good_round: HashMap[uint256, uint256]
_active: HashMap[uint256, uint256]
# Economics, per task (wei): see TaskInfo.
_pool: HashMap[uint256, uint256]
_paid: HashMap[uint256, uint256]
_slashed: HashMap[uint256, uint256]
_allowed: HashMap[uint256, HashMap[address, bool]]

# Keyed by task_id << 160 | address (one hash per access).
_member: HashMap[uint256, uint256]
_account: HashMap[uint256, HashMap[uint256, address]]
_peer_id: HashMap[uint256, HashMap[uint256, Bytes[MAX_PEER_ID]]]
_x25519: HashMap[uint256, HashMap[uint256, bytes32]]
# Secure mode: sha256 of each member's Paillier public key blob (zero: never decrypts), and
# per task the bitmap of members that registered one. Both are fixed at join.
_he_key: HashMap[uint256, HashMap[uint256, bytes32]]
_keyed: HashMap[uint256, uint256]
# Eight 32-bit reputations per word, so finalization touches 32 words for 256 members.
_reps: HashMap[uint256, HashMap[uint256, uint256]]

_round_hdr: HashMap[uint256, uint256]
_round_base: HashMap[uint256, bytes32]
_round_global: HashMap[uint256, bytes32]
_round_accepted: HashMap[uint256, uint256]
_round_eligible: HashMap[uint256, uint256]
# Starts all ones; a submitter clears its bit, so "accepted & unsubmitted == 0" is the
# bitmap check and no submitter pays for creating the slot.
_round_unsubmitted: HashMap[uint256, uint256]
# Starts as the eligible set; a voter clears its bit.
_round_notvoted: HashMap[uint256, uint256]
_round_alarmed: HashMap[uint256, uint256]
_tally: HashMap[uint256, HashMap[bytes32, uint256]]
# Secure mode, keyed by rk: who re-masked, and the digest of the decryptor's proof blob.
_round_remasked: HashMap[uint256, uint256]
_round_sum: HashMap[uint256, bytes32]
# Finalized rounds, for an alarm's revert: the reward share and who was credited it, the
# reputation deltas (only when alarms are enabled), who the round ejected, and which
# raisers of its alarm their bond ejected. Each is written only when nonzero.
_round_share: HashMap[uint256, uint256]
_round_paid: HashMap[uint256, uint256]
_round_delta: HashMap[uint256, HashMap[uint256, uint256]]
_round_ejected: HashMap[uint256, uint256]
_alarm_ejected: HashMap[uint256, uint256]
# The reputation a round's alarms took out of the active total: every raiser's bond, and the
# bonded reputation of the raisers it ejected. It stays in the total the round's alarms are
# measured against (their weights count before the bond, and a revert returns it all), so
# raising or leaving cannot lower the bar: at alarm_bps 10000 only every member reverts.
_alarm_held: HashMap[uint256, uint256]
# Members that voted on a round after it finalized (late votes), keyed by rk.
_round_late: HashMap[uint256, uint256]
# Rewards credited to each member (by index); kept as the forfeited amount when ejected.
_earned: HashMap[uint256, HashMap[uint256, uint256]]

# Keyed by (rk << 8) | member index: one hash per access instead of two.
_commit_digest: HashMap[uint256, bytes32]
# The commit word of each digest committed in a task (zero: never committed); keyed by the
# task and the digest, so the slot submit must create anyway is also the "digest taken" check.
_commit_meta: HashMap[bytes32, uint256]
_vote_digest: HashMap[uint256, bytes32]
_vote_accepted: HashMap[uint256, uint256]
_remask_digest: HashMap[uint256, bytes32]


# ---------------------------------------------------------------- internal helpers


@internal
@pure
def _rk(task_id: uint256, round: uint256) -> uint256:
    return (task_id << 32) | round


@internal
@pure
def _mkey(task_id: uint256, account: address) -> uint256:
    return (task_id << 160) | convert(account, uint256)


@internal
@pure
def _set(word: uint256, at: uint256, mask: uint256, v: uint256) -> uint256:
    return (word & ~(mask << at)) | (v << at)


@internal
@view
def _task_state(task_id: uint256) -> uint256:
    st: uint256 = self._state[task_id]
    assert st != 0, "no task"
    return st


@internal
@view
def _running_state(task_id: uint256, round: uint256) -> uint256:
    """State word of a running task whose current round is `round`."""
    st: uint256 = self._task_state(task_id)
    status: uint256 = st & M8
    assert status != TASK_REGISTERING, "not started"
    assert status == TASK_RUNNING, "closed task"
    assert round == (st >> S_ROUND) & M32, "wrong round"
    return st


@internal
@view
def _active_member(task_id: uint256, account: address) -> uint256:
    """Member word of `account`, which must be an active member of the task."""
    m: uint256 = self._member[self._mkey(task_id, account)]
    status: uint256 = m & M8
    assert status != 0, "not member"
    assert status != MEMBER_EJECTED, "ejected"
    assert status == MEMBER_ACTIVE, "withdrawn"
    return m


@internal
@view
def _eligible_index(task_id: uint256, account: address, round: uint256) -> uint256:
    """Member index of `account`, which must have been active when `round` opened."""
    m: uint256 = self._active_member(task_id, account)
    assert (m >> M_SINCE) & M32 <= round, "not eligible"
    return (m >> M_INDEX) & M16


@internal
@view
def _rep(task_id: uint256, index: uint256) -> uint256:
    return (self._reps[task_id][index >> 3] >> (32 * (index & 7))) & M32


@internal
@pure
def _popcount(x: uint256) -> uint256:
    n: uint256 = 0
    v: uint256 = x
    for i: uint256 in range(256):
        if v == 0:
            break
        v &= v - 1
        n += 1
    return n


@internal
@pure
def _bit_index(low: uint256) -> uint256:
    """Position of the single set bit of `low` (binary search)."""
    v: uint256 = low
    index: uint256 = 0
    for j: uint256 in range(8):
        step: uint256 = 128 >> j
        if v >> step != 0:
            v >>= step
            index += step
    return index


@internal
@pure
def _nth_bit(x: uint256, n: uint256) -> uint256:
    """Index of the n-th (from 0) set bit of `x` in ascending order; x has more than n."""
    v: uint256 = x
    for i: uint256 in range(n, bound=MAX_MEMBERS):
        v &= v - 1
    return self._bit_index(v & unsafe_sub(0, v))


@internal
@view
def _decryptor(task_id: uint256, round: uint256) -> uint256:
    """Secure mode: the member that decrypts `round`'s sum (an existing round).

    Rotates over the round's eligible members that registered a Paillier key, skipping
    those that did not submit in the previous round while any candidate did, so a crashed
    member does not stall every n-th round. Every input is fixed once the round opened.
    """
    rk: uint256 = self._rk(task_id, round)
    cands: uint256 = self._round_eligible[rk] & self._keyed[task_id]
    if round > 1:
        prk: uint256 = self._rk(task_id, round - 1)
        prev: uint256 = ~self._round_unsubmitted[prk] & self._round_eligible[prk]
        if cands & prev != 0:
            cands &= prev
    assert cands != 0, "no decryptor"
    return self._nth_bit(cands, (round - 1) % self._popcount(cands))


@internal
@view
def _settled(task_id: uint256, st: uint256) -> bool:
    """The task ended and the alarm window of its last good round closed: nothing can
    change a member's payout any more."""
    if st & M8 < TASK_FINISHED:
        return False
    good: uint256 = self._good_round[task_id]
    if good == 0:
        return True
    final: uint256 = (self._round_hdr[self._rk(task_id, good)] >> H_FINAL) & M40
    return block.timestamp >= final + (self._cfg2[task_id] & M32)


@internal
@view
def _payout(task_id: uint256, index: uint256, m: uint256) -> uint256:
    """What withdraw pays the member at `index` (member word `m`): its stake, its rewards,
    and a share of the pool left at the end in proportion to its rewards."""
    if m & M8 != MEMBER_ACTIVE:
        return 0
    earned: uint256 = self._earned[task_id][index]
    paid: uint256 = self._paid[task_id]
    bonus: uint256 = 0
    if paid > 0:
        bonus = self._pool[task_id] * earned // paid
    return ((self._cfg2[task_id] >> C2_STAKE) & M96) + earned + bonus


# ---------------------------------------------------------------- views (FLChain)


@internal
@view
def _check_round(task_id: uint256, round: uint256) -> uint256:
    st: uint256 = self._task_state(task_id)
    assert round >= 1 and round <= (st >> S_ROUND) & M32, "wrong round"
    return st


@internal
@view
def _check_index(st: uint256, index: uint256):
    assert index < (st >> S_NMEM) & M16, "no member"


@internal
@view
def _get_task(task_id: uint256) -> TaskInfo:
    st: uint256 = self._task_state(task_id)
    cfg: uint256 = self._cfg[task_id]
    cfg2: uint256 = self._cfg2[task_id]
    return TaskInfo(
        task_id=task_id,
        owner=convert(cfg & ((1 << 160) - 1), address),
        status=st & M8,
        config_digest=self._config_digest[task_id],
        initial_digest=self._initial_digest[task_id],
        global_digest=self._good_digest[task_id],
        global_round=self._good_round[task_id],
        min_members=(st >> S_MINM) & M16,
        max_members=(cfg >> C_MAXM) & M16,
        submit_window=(st >> S_SUBMIT) & M32,
        vote_window=(st >> S_VOTE) & M32,
        alarm_window=cfg2 & M32,
        quorum_bps=(cfg >> C_QUORUM) & M16,
        alarm_bps=(cfg >> C_ALARM) & M16,
        stake=(cfg2 >> C2_STAKE) & M96,
        max_rounds=cfg2 >> C2_MAXR,
        rep_floor=(cfg2 >> C2_FLOOR) & M32,
        allowlist=cfg & (1 << C_ALLOW) != 0,
        max_samples=(cfg2 >> C2_MAXS) & M64,
        current_round=(st >> S_ROUND) & M32,
        round_start=(st >> S_START) & M40,
        n_members=(st >> S_NMEM) & M16,
        n_active=(st >> S_NACT) & M16,
        total_reputation=(st >> S_REP) & M32,
        reward_pool=self._pool[task_id],
        rewards_paid=self._paid[task_id],
        slashed=self._slashed[task_id],
        settled=self._settled(task_id, st),
    )


@internal
@view
def _get_round(task_id: uint256, round: uint256) -> RoundInfo:
    st: uint256 = self._check_round(task_id, round)
    rk: uint256 = self._rk(task_id, round)
    hdr: uint256 = self._round_hdr[rk]
    eligible: uint256 = self._round_eligible[rk]
    start: uint256 = (hdr >> H_START) & M40
    submit_deadline: uint256 = start + ((st >> S_SUBMIT) & M32)
    return RoundInfo(
        task_id=task_id,
        round=round,
        status=hdr & M8,
        start=start,
        submit_deadline=submit_deadline,
        vote_deadline=submit_deadline + ((st >> S_VOTE) & M32),
        finalized_at=(hdr >> H_FINAL) & M40,
        base_digest=self._round_base[rk],
        base_round=(hdr >> H_BASE) & M32,
        global_digest=self._round_global[rk],
        accepted=self._round_accepted[rk],
        eligible=eligible,
        submitted=eligible & ~self._round_unsubmitted[rk],
        voted=eligible & ~self._round_notvoted[rk],
        alarmed=self._round_alarmed[rk],
        alarm_weight=(hdr >> H_ALARM) & M32,
        total_reputation=(hdr >> H_REP) & M32,
        quorum_bps=(hdr >> H_QUORUM) & M16,
        remasked=self._round_remasked[rk],
        sum_digest=self._round_sum[rk],
        reward_share=self._round_share[rk],
        paid=self._round_paid[rk],
    )


@internal
@view
def _get_member(task_id: uint256, index: uint256) -> MemberInfo:
    st: uint256 = self._task_state(task_id)
    self._check_index(st, index)
    account: address = self._account[task_id][index]
    m: uint256 = self._member[self._mkey(task_id, account)]
    return MemberInfo(
        index=index,
        account=account,
        peer_id=self._peer_id[task_id][index],
        x25519=self._x25519[task_id][index],
        status=m & M8,
        since_round=(m >> M_SINCE) & M32,
        reputation=self._rep(task_id, index),
        he_key=self._he_key[task_id][index],
        earned=self._earned[task_id][index],
        payout=self._payout(task_id, index, m),
    )


@internal
@view
def _member_index(task_id: uint256, account: address) -> uint256:
    self._task_state(task_id)
    m: uint256 = self._member[self._mkey(task_id, account)]
    assert m != 0, "not member"
    return (m >> M_INDEX) & M16


@internal
@view
def _is_allowed(task_id: uint256, account: address) -> bool:
    self._task_state(task_id)
    return self._allowed[task_id][account]


@internal
@view
def _get_update(task_id: uint256, round: uint256, index: uint256) -> UpdateInfo:
    st: uint256 = self._check_round(task_id, round)
    self._check_index(st, index)
    digest: bytes32 = self._commit_digest[(self._rk(task_id, round) << 8) | index]
    meta: uint256 = 0
    if digest != empty(bytes32):
        meta = self._commit_meta[keccak256(abi_encode(task_id, digest))]
    return UpdateInfo(
        submitted=meta != 0,
        digest=digest,
        samples=meta & M64,
        base_round=(meta >> U_BASE) & M32,
        loss=convert(((meta >> U_LOSS) & M64), int256) - LOSS_BIAS if meta != 0 else 0,
    )


@internal
@view
def _get_vote(task_id: uint256, round: uint256, index: uint256) -> VoteInfo:
    st: uint256 = self._check_round(task_id, round)
    self._check_index(st, index)
    rk: uint256 = self._rk(task_id, round)
    eligible: uint256 = self._round_eligible[rk]
    bit: uint256 = 1 << index
    return VoteInfo(
        voted=(eligible & bit != 0) and (self._round_notvoted[rk] & bit == 0),
        digest=self._vote_digest[(rk << 8) | index],
        accepted=self._vote_accepted[(rk << 8) | index],
    )


@internal
@view
def _get_remask(task_id: uint256, round: uint256, index: uint256) -> bytes32:
    st: uint256 = self._check_round(task_id, round)
    self._check_index(st, index)
    return self._remask_digest[(self._rk(task_id, round) << 8) | index]


@internal
@view
def _decryptor_view(task_id: uint256, round: uint256) -> uint256:
    self._check_round(task_id, round)
    return self._decryptor(task_id, round)


@internal
@view
def _get_tally(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256) -> uint256:
    self._check_round(task_id, round)
    return self._tally[self._rk(task_id, round)][keccak256(abi_encode(digest, accepted))]


@internal
@view
def _reputation(task_id: uint256, index: uint256) -> uint256:
    st: uint256 = self._task_state(task_id)
    self._check_index(st, index)
    return self._rep(task_id, index)


@internal
@view
def _reputations(task_id: uint256) -> DynArray[uint256, MAX_MEMBERS]:
    st: uint256 = self._task_state(task_id)
    n: uint256 = (st >> S_NMEM) & M16
    out: DynArray[uint256, MAX_MEMBERS] = []
    for i: uint256 in range(n, bound=MAX_MEMBERS):
        out.append(self._rep(task_id, i))
    return out


@internal
@view
def _consensus_weights(task_id: uint256, round: uint256) -> DynArray[uint256, MAX_MEMBERS]:
    st: uint256 = self._check_round(task_id, round)
    rk: uint256 = self._rk(task_id, round)
    cap: uint256 = (self._cfg2[task_id] >> C2_MAXS) & M64
    n: uint256 = (st >> S_NMEM) & M16
    out: DynArray[uint256, MAX_MEMBERS] = []
    for i: uint256 in range(n, bound=MAX_MEMBERS):
        digest: bytes32 = self._commit_digest[(rk << 8) | i]
        weight: uint256 = 0
        if digest != empty(bytes32):
            weight = self._rep(task_id, i)
            if cap != 0:
                meta: uint256 = self._commit_meta[keccak256(abi_encode(task_id, digest))]
                weight *= min(meta & M64, cap)
        out.append(weight)
    return out


# ---------------------------------------------------------------- settlement
# Used by FLChainSettlement only (Vyper leaves unused internal functions out of FLChain).


@internal
def _owner_only(task_id: uint256) -> uint256:
    cfg: uint256 = self._cfg[task_id]
    assert cfg != 0, "no task"
    assert convert(cfg & ((1 << 160) - 1), address) == msg.sender, "not owner"
    return cfg


@internal
def _open_round(task_id: uint256, st: uint256, round: uint256) -> uint256:
    """Open `round` from the last good global model; returns the updated state word."""
    rk: uint256 = self._rk(task_id, round)
    active: uint256 = self._active[task_id]
    total: uint256 = (st >> S_REP) & M32
    base_round: uint256 = self._good_round[task_id]
    base: bytes32 = self._good_digest[task_id]
    quorum: uint256 = (self._cfg[task_id] >> C_QUORUM) & M16
    hdr: uint256 = ROUND_OPEN | (block.timestamp << H_START) | (total << H_REP)
    hdr |= (base_round << H_BASE) | (quorum << H_QUORUM)
    self._round_hdr[rk] = hdr
    self._round_base[rk] = base
    self._round_eligible[rk] = active
    self._round_unsubmitted[rk] = ALL_ONES
    self._round_notvoted[rk] = active
    new_st: uint256 = self._set(st, S_ROUND, M32, round)
    new_st = self._set(new_st, S_START, M40, block.timestamp)
    new_st = self._set(new_st, S_BASE, M32, base_round)
    log RoundOpened(
        task_id=task_id,
        round=round,
        base_digest=base,
        base_round=base_round,
        eligible=active,
        total_reputation=total,
        start=block.timestamp,
    )
    return new_st


@internal
def _advance(task_id: uint256, st: uint256, round: uint256) -> uint256:
    """After `round` ended: open the next round, or finish the task at max rounds."""
    if round >= self._cfg2[task_id] >> C2_MAXR:
        log TaskEnded(
            task_id=task_id,
            status=TASK_FINISHED,
            global_digest=self._good_digest[task_id],
            global_round=self._good_round[task_id],
        )
        return self._set(st, 0, M8, TASK_FINISHED)
    return self._open_round(task_id, st, round + 1)


@internal
def _send(to: address, amount: uint256):
    if amount > 0:
        raw_call(to, b"", value=amount)


@internal
def _set_rep(task_id: uint256, index: uint256, rep: uint256):
    w: uint256 = index >> 3
    self._reps[task_id][w] = self._set(self._reps[task_id][w], 32 * (index & 7), M32, rep)


@internal
def _eject(task_id: uint256, st: uint256, round: uint256, index: uint256, rep: uint256) -> uint256:
    """Eject an active member whose reputation `rep` fell below the floor: its stake and
    earned rewards go to the reward pool (paid out to the honest members later), and its
    reputation leaves the total. Returns the updated state word."""
    account: address = self._account[task_id][index]
    key: uint256 = self._mkey(task_id, account)
    self._member[key] = self._set(self._member[key], 0, M8, MEMBER_EJECTED)
    earned: uint256 = self._earned[task_id][index]
    forfeited: uint256 = ((self._cfg2[task_id] >> C2_STAKE) & M96) + earned
    self._pool[task_id] += forfeited
    self._paid[task_id] -= earned
    self._slashed[task_id] += forfeited
    self._active[task_id] &= ~(1 << index)
    log MemberEjected(
        task_id=task_id,
        round=round,
        member=index,
        account=account,
        reputation=rep,
        forfeited=forfeited,
    )
    new_st: uint256 = self._set(st, S_NACT, M16, ((st >> S_NACT) & M16) - 1)
    return self._set(new_st, S_REP, M32, ((st >> S_REP) & M32) - rep)


@internal
def _reinstate(task_id: uint256, st: uint256, round: uint256, index: uint256) -> uint256:
    """Undo `_eject` for a member ejected by a round that was then reverted."""
    account: address = self._account[task_id][index]
    key: uint256 = self._mkey(task_id, account)
    m: uint256 = self._member[key]
    if m & M8 != MEMBER_EJECTED:
        return st
    self._member[key] = self._set(m, 0, M8, MEMBER_ACTIVE)
    earned: uint256 = self._earned[task_id][index]
    amount: uint256 = ((self._cfg2[task_id] >> C2_STAKE) & M96) + earned
    # The pool holds the forfeit: nothing is paid out of it between the ejection and the
    # revert of the same round (min() only guards the arithmetic).
    pool: uint256 = self._pool[task_id]
    self._pool[task_id] = pool - min(pool, amount)
    slashed: uint256 = self._slashed[task_id]
    self._slashed[task_id] = slashed - min(slashed, amount)
    self._paid[task_id] += earned
    self._active[task_id] |= 1 << index
    rep: uint256 = self._rep(task_id, index)
    log MemberReinstated(task_id=task_id, round=round, member=index, reputation=rep, restored=amount)
    new_st: uint256 = self._set(st, S_NACT, M16, ((st >> S_NACT) & M16) + 1)
    return self._set(new_st, S_REP, M32, ((st >> S_REP) & M32) + rep)


@internal
def _move_reputations(
    task_id: uint256, st: uint256, rk: uint256, round: uint256, digest: bytes32,
    accepted: uint256, failed: bool
) -> uint256:
    """Move the reputations of a round's eligible, still active members; eject those that
    fall below the floor. Returns the updated state word.

    Finalized round: accepted update +REP_ACCEPT, rejected -REP_REJECT, none -REP_NO_SUBMIT,
    a vote for another pair -REP_BAD_VOTE; the deltas are kept (when alarms are enabled) so
    that a revert can undo them. Failed round, when anyone voted: no update -REP_NO_SUBMIT,
    no vote -REP_NO_VOTE (nobody voting at all blames nobody: a stalled chain or decryptor).
    """
    eligible: uint256 = self._round_eligible[rk]
    unsubmitted: uint256 = self._round_unsubmitted[rk]
    notvoted: uint256 = self._round_notvoted[rk]
    # A failed round in which nobody voted blames nobody for it.
    blame: bool = not failed or eligible & ~notvoted != 0
    members: uint256 = eligible & self._active[task_id]
    cfg2: uint256 = self._cfg2[task_id]
    lowest: uint256 = (cfg2 >> C2_FLOOR) & M32
    keep: bool = not failed and cfg2 & M32 != 0
    # The previous round's votes are settled now, if it finalized: its late votes were
    # possible until this round ended.
    prk: uint256 = rk - 1
    p_missing: uint256 = 0
    p_late: uint256 = 0
    p_digest: bytes32 = empty(bytes32)
    p_accepted: uint256 = 0
    if round > 1 and self._round_hdr[prk] & M8 == ROUND_FINALIZED:
        p_missing = self._round_eligible[prk] & self._round_notvoted[prk]
        p_late = self._round_late[prk]
        p_digest = self._round_global[prk]
        p_accepted = self._round_accepted[prk]
    new_st: uint256 = st
    ejected: uint256 = 0
    for w: uint256 in range(32):
        chunk: uint256 = (members >> (8 * w)) & M8
        if chunk == 0:
            continue
        word: uint256 = self._reps[task_id][w]
        new_word: uint256 = word
        deltas: uint256 = 0
        for j: uint256 in range(8):
            if chunk & (1 << j) == 0:
                continue
            index: uint256 = 8 * w + j
            bit: uint256 = 1 << index
            old: uint256 = (word >> (32 * j)) & M32
            up: uint256 = 0
            down: uint256 = 0
            if not blame:
                pass
            elif unsubmitted & bit != 0:
                down = REP_NO_SUBMIT
            elif failed:
                pass
            elif accepted & bit != 0:
                up = REP_ACCEPT
            else:
                down = REP_REJECT
            if notvoted & bit != 0:
                if failed and blame:
                    down += REP_NO_VOTE
            elif not failed:
                if self._vote_digest[(rk << 8) | index] != digest:
                    down += REP_BAD_VOTE
                elif self._vote_accepted[(rk << 8) | index] != accepted:
                    down += REP_BAD_VOTE
            if p_missing & bit != 0:
                down += REP_NO_LATE_VOTE
            elif p_late & bit != 0:
                if self._vote_digest[(prk << 8) | index] != p_digest:
                    down += REP_BAD_VOTE
                elif self._vote_accepted[(prk << 8) | index] != p_accepted:
                    down += REP_BAD_VOTE
            new: uint256 = 0
            if old + up > down:
                new = min(old + up - down, REP_MAX)
            if new != old:
                new_word = self._set(new_word, 32 * j, M32, new)
                deltas |= (new + D_ZERO - old) << (16 * (index & 15))
                new_st = self._set(new_st, S_REP, M32, ((new_st >> S_REP) & M32) + new - old)
                log ReputationChanged(task_id=task_id, round=round, member=index, old=old, new=new)
            if new < lowest:
                ejected |= bit
                new_st = self._eject(task_id, new_st, round, index, new)
        if new_word != word:
            self._reps[task_id][w] = new_word
        if keep and deltas != 0:
            self._round_delta[rk][w >> 1] |= deltas
    if keep and ejected != 0:
        self._round_ejected[rk] = ejected
    return new_st


@internal
def _pay_round(task_id: uint256, rk: uint256, round: uint256, accepted: uint256):
    """Credit the round's reward: the pool spread evenly over the rounds left (this one
    included), in equal shares to the accepted members that are still active and voted on
    the previous round (in time or late) when that round finalized or failed with votes:
    an update alone does not earn, taking part in the consensus does too."""
    paid_set: uint256 = accepted & self._active[task_id]
    if round > 1:
        prk: uint256 = rk - 1
        p_status: uint256 = self._round_hdr[prk] & M8
        p_nonvoters: uint256 = self._round_eligible[prk] & self._round_notvoted[prk]
        if p_status == ROUND_FINALIZED or (
            p_status == ROUND_FAILED and self._round_eligible[prk] & ~p_nonvoters != 0
        ):
            paid_set &= ~p_nonvoters
    pool: uint256 = self._pool[task_id]
    if paid_set == 0 or pool == 0:
        return
    n: uint256 = self._popcount(paid_set)
    left: uint256 = (self._cfg2[task_id] >> C2_MAXR) + 1 - round
    share: uint256 = pool // left // n
    if share == 0:
        return
    v: uint256 = paid_set
    for k: uint256 in range(MAX_MEMBERS):
        if v == 0:
            break
        low: uint256 = v & unsafe_sub(0, v)
        v ^= low
        self._earned[task_id][self._bit_index(low)] += share
    self._pool[task_id] = pool - share * n
    self._paid[task_id] += share * n
    self._round_share[rk] = share
    self._round_paid[rk] = paid_set
    log RoundPaid(task_id=task_id, round=round, paid=paid_set, share=share, reward_pool=pool - share * n)


@internal
def _finalize_round(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256, tally: uint256):
    """The vote that reached quorum: pay the round, move reputations, record the global
    model and open the next round."""
    st: uint256 = self._state[task_id]
    rk: uint256 = self._rk(task_id, round)
    hdr: uint256 = self._round_hdr[rk]
    self._pay_round(task_id, rk, round, accepted)
    new_st: uint256 = self._move_reputations(task_id, st, rk, round, digest, accepted, False)
    new_hdr: uint256 = self._set(hdr, 0, M8, ROUND_FINALIZED)
    self._round_hdr[rk] = self._set(new_hdr, H_FINAL, M40, block.timestamp)
    self._round_global[rk] = digest
    self._round_accepted[rk] = accepted
    self._good_digest[task_id] = digest
    self._good_round[task_id] = round
    log RoundFinalized(
        task_id=task_id,
        round=round,
        global_digest=digest,
        accepted=accepted,
        tally=tally,
        total_reputation=(hdr >> H_REP) & M32,
    )
    self._state[task_id] = self._advance(task_id, new_st, round)


@internal
def _late_vote(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256):
    """A vote on the round before the current one, after it finalized: recorded (it
    changes no tally) and settled when the current round ends."""
    st: uint256 = self._task_state(task_id)
    assert st & M8 == TASK_RUNNING and round + 1 == (st >> S_ROUND) & M32, "wrong round"
    rk: uint256 = self._rk(task_id, round)
    assert self._round_hdr[rk] & M8 == ROUND_FINALIZED, "wrong round"
    index: uint256 = self._eligible_index(task_id, msg.sender, round)
    bit: uint256 = 1 << index
    notvoted: uint256 = self._round_notvoted[rk]
    assert notvoted & bit != 0, "already voted"
    assert accepted & self._round_unsubmitted[rk] == 0, "bad bitmap"
    assert digest != empty(bytes32), "bad digest"
    self._round_notvoted[rk] = notvoted ^ bit
    self._round_late[rk] |= bit
    mk: uint256 = (rk << 8) | index
    self._vote_digest[mk] = digest
    self._vote_accepted[mk] = accepted
    log VoteCast(
        task_id=task_id,
        round=round,
        member=index,
        digest=digest,
        accepted=accepted,
        weight=0,
        tally=self._tally[rk][keccak256(abi_encode(digest, accepted))],
    )


@internal
def _undo_round(task_id: uint256, st: uint256, rk: uint256, round: uint256) -> uint256[2]:
    """A revert: undo the round's reputation deltas, reinstate the members it ejected, claw
    back its rewards, return its alarm bonds (reinstating raisers their bond ejected).
    Returns [state word, wei clawed back]."""
    new_st: uint256 = st
    for dw: uint256 in range(MAX_MEMBERS // 16):
        word: uint256 = self._round_delta[rk][dw]
        if word == 0:
            continue
        for j: uint256 in range(16):
            f: uint256 = (word >> (16 * j)) & M16
            if f == 0 or f == D_ZERO:
                continue
            index: uint256 = 16 * dw + j
            cur: uint256 = self._rep(task_id, index)
            new: uint256 = min(cur + D_ZERO - min(f, cur + D_ZERO), REP_MAX)
            self._set_rep(task_id, index, new)
            if self._active[task_id] & (1 << index) != 0:
                new_st = self._set(new_st, S_REP, M32, ((new_st >> S_REP) & M32) + new - cur)
            log ReputationChanged(task_id=task_id, round=round, member=index, old=cur, new=new)
    v: uint256 = self._round_ejected[rk]
    for k: uint256 in range(MAX_MEMBERS):
        if v == 0:
            break
        low: uint256 = v & unsafe_sub(0, v)
        v ^= low
        new_st = self._reinstate(task_id, new_st, round, self._bit_index(low))
    share: uint256 = self._round_share[rk]
    clawed: uint256 = 0
    if share > 0:
        v = self._round_paid[rk]
        active: uint256 = self._active[task_id]
        for k: uint256 in range(MAX_MEMBERS):
            if v == 0:
                break
            low: uint256 = v & unsafe_sub(0, v)
            v ^= low
            self._earned[task_id][self._bit_index(low)] -= share
            if active & low != 0:
                clawed += share
            else:
                # An ejected member forfeited this share to the pool already.
                self._slashed[task_id] -= share
        self._pool[task_id] += clawed
        self._paid[task_id] -= clawed
    v = self._round_alarmed[rk]
    for k: uint256 in range(MAX_MEMBERS):
        if v == 0:
            break
        low: uint256 = v & unsafe_sub(0, v)
        v ^= low
        index: uint256 = self._bit_index(low)
        cur: uint256 = self._rep(task_id, index)
        new: uint256 = min(cur + REP_ALARM, REP_MAX)
        self._set_rep(task_id, index, new)
        if self._active[task_id] & low != 0:
            new_st = self._set(new_st, S_REP, M32, ((new_st >> S_REP) & M32) + new - cur)
        log ReputationChanged(task_id=task_id, round=round, member=index, old=cur, new=new)
    v = self._alarm_ejected[rk]
    for k: uint256 in range(MAX_MEMBERS):
        if v == 0:
            break
        low: uint256 = v & unsafe_sub(0, v)
        v ^= low
        new_st = self._reinstate(task_id, new_st, round, self._bit_index(low))
    return [new_st, clawed]


# ---------------------------------------------------------------- entry points run by FLChainSettlement


@internal
@payable
def _create_task(
    config_digest: bytes32,
    initial_digest: bytes32,
    min_members: uint256,
    max_members: uint256,
    submit_window: uint256,
    vote_window: uint256,
    alarm_window: uint256,
    quorum_bps: uint256,
    alarm_bps: uint256,
    stake: uint256,
    max_rounds: uint256,
    rep_floor: uint256,
    allowlist: bool,
    max_samples: uint256,
) -> uint256:
    assert config_digest != empty(bytes32), "bad digest"
    assert initial_digest != empty(bytes32), "bad digest"
    assert min_members >= 1 and min_members <= max_members, "bad members"
    assert max_members <= MAX_MEMBERS, "bad members"
    assert submit_window >= 1 and submit_window <= M32, "bad window"
    assert vote_window >= 1 and vote_window <= M32, "bad window"
    assert alarm_window <= M32, "bad window"
    assert quorum_bps > BPS // 2 and quorum_bps <= BPS, "bad quorum"
    # An alarm threshold below the quorum would let fewer members undo a round than it took
    # to agree on it.
    assert alarm_bps >= quorum_bps and alarm_bps <= BPS, "bad alarm threshold"
    assert stake <= M96, "bad stake"
    assert max_rounds >= 1 and max_rounds < M32, "bad max rounds"
    assert rep_floor < REP_UNIT, "bad floor"
    assert max_samples <= M64, "bad max samples"

    task_id: uint256 = self.task_count + 1
    assert task_id <= M32, "too many tasks"
    self.task_count = task_id
    st: uint256 = TASK_REGISTERING | (submit_window << S_SUBMIT) | (vote_window << S_VOTE)
    st |= min_members << S_MINM
    self._state[task_id] = st
    cfg: uint256 = convert(msg.sender, uint256) | (max_members << C_MAXM)
    cfg |= (quorum_bps << C_QUORUM) | (alarm_bps << C_ALARM)
    if allowlist:
        cfg |= 1 << C_ALLOW
    self._cfg[task_id] = cfg
    cfg2: uint256 = alarm_window | (rep_floor << C2_FLOOR) | (stake << C2_STAKE)
    self._cfg2[task_id] = cfg2 | (max_samples << C2_MAXS) | (max_rounds << C2_MAXR)
    self._config_digest[task_id] = config_digest
    self._initial_digest[task_id] = initial_digest
    self._good_digest[task_id] = initial_digest
    log TaskCreated(
        task_id=task_id,
        owner=msg.sender,
        config_digest=config_digest,
        initial_digest=initial_digest,
        min_members=min_members,
        max_members=max_members,
        submit_window=submit_window,
        vote_window=vote_window,
        alarm_window=alarm_window,
        quorum_bps=quorum_bps,
        alarm_bps=alarm_bps,
        stake=stake,
        max_rounds=max_rounds,
        rep_floor=rep_floor,
        allowlist=allowlist,
        max_samples=max_samples,
        reward=msg.value,
    )
    if msg.value > 0:
        self._pool[task_id] = msg.value
    return task_id


@internal
@payable
def _fund_task(task_id: uint256):
    st: uint256 = self._task_state(task_id)
    assert st & M8 <= TASK_RUNNING, "closed task"
    assert msg.value > 0, "no value"
    pool: uint256 = self._pool[task_id] + msg.value
    self._pool[task_id] = pool
    log RewardFunded(task_id=task_id, funder=msg.sender, amount=msg.value, reward_pool=pool)


@internal
def _set_allowed(task_id: uint256, account: address, allowed: bool):
    self._owner_only(task_id)
    assert self._state[task_id] & M8 <= TASK_RUNNING, "closed task"
    self._allowed[task_id][account] = allowed
    log AllowlistChanged(task_id=task_id, account=account, allowed=allowed)


@internal
@payable
def _join(
    task_id: uint256,
    peer_id: Bytes[MAX_PEER_ID],
    x25519: bytes32,
    he_key: bytes32,
    peer_proof: Bytes[MAX_PEER_PROOF],
) -> uint256:
    st: uint256 = self._task_state(task_id)
    status: uint256 = st & M8
    assert status <= TASK_RUNNING, "closed task"
    assert self._member[self._mkey(task_id, msg.sender)] == 0, "already member"
    cfg: uint256 = self._cfg[task_id]
    if cfg & (1 << C_ALLOW) != 0:
        assert self._allowed[task_id][msg.sender], "not allowed"
    index: uint256 = (st >> S_NMEM) & M16
    assert index < (cfg >> C_MAXM) & M16, "task full"
    cfg2: uint256 = self._cfg2[task_id]
    stake: uint256 = (cfg2 >> C2_STAKE) & M96
    assert msg.value == stake, "wrong stake"
    assert len(peer_id) > 0, "bad peer id"
    assert x25519 != empty(bytes32), "bad key"

    since: uint256 = ((st >> S_ROUND) & M32) + 1
    self._member[self._mkey(task_id, msg.sender)] = MEMBER_ACTIVE | (index << M_INDEX) | (since << M_SINCE)
    self._account[task_id][index] = msg.sender
    self._peer_id[task_id][index] = peer_id
    self._x25519[task_id][index] = x25519
    if he_key != empty(bytes32):
        self._he_key[task_id][index] = he_key
        self._keyed[task_id] |= 1 << index
    w: uint256 = index >> 3
    self._reps[task_id][w] = self._set(self._reps[task_id][w], 32 * (index & 7), M32, REP_UNIT)
    self._active[task_id] |= 1 << index

    n_active: uint256 = ((st >> S_NACT) & M16) + 1
    st = self._set(st, S_NMEM, M16, index + 1)
    st = self._set(st, S_NACT, M16, n_active)
    st = self._set(st, S_REP, M32, ((st >> S_REP) & M32) + REP_UNIT)
    log MemberJoined(
        task_id=task_id,
        account=msg.sender,
        member=index,
        peer_id=peer_id,
        x25519=x25519,
        since_round=since,
        stake=stake,
        he_key=he_key,
        peer_proof=peer_proof,
    )
    if status == TASK_REGISTERING and n_active >= (st >> S_MINM) & M16:
        st = self._set(st, 0, M8, TASK_RUNNING)
        st = self._open_round(task_id, st, 1)
    self._state[task_id] = st
    return index


@internal
def _remask(task_id: uint256, round: uint256, digest: bytes32):
    st: uint256 = self._running_state(task_id, round)
    index: uint256 = self._eligible_index(task_id, msg.sender, round)
    rk: uint256 = self._rk(task_id, round)
    submit_end: uint256 = ((st >> S_START) & M40) + ((st >> S_SUBMIT) & M32)
    assert block.timestamp >= submit_end, "wrong phase"
    assert block.timestamp < submit_end + ((st >> S_VOTE) & M32), "wrong phase"
    bit: uint256 = 1 << index
    unsubmitted: uint256 = self._round_unsubmitted[rk]
    assert unsubmitted & bit == 0, "not submitted"
    assert unsubmitted & self._round_eligible[rk] != 0, "nothing to remask"
    remasked: uint256 = self._round_remasked[rk]
    assert remasked & bit == 0, "already remasked"
    assert digest != empty(bytes32), "bad digest"
    self._round_remasked[rk] = remasked | bit
    self._remask_digest[(rk << 8) | index] = digest
    log UpdateRemasked(task_id=task_id, round=round, member=index, digest=digest)


@internal
def _publish_sum(task_id: uint256, round: uint256, digest: bytes32):
    st: uint256 = self._running_state(task_id, round)
    index: uint256 = self._decryptor(task_id, round)
    assert self._account[task_id][index] == msg.sender, "not decryptor"
    rk: uint256 = self._rk(task_id, round)
    # The vote phase, as `vote` defines it.
    submit_end: uint256 = ((st >> S_START) & M40) + ((st >> S_SUBMIT) & M32)
    assert block.timestamp < submit_end + ((st >> S_VOTE) & M32), "wrong phase"
    if block.timestamp < submit_end:
        assert self._round_unsubmitted[rk] & self._round_eligible[rk] == 0, "wrong phase"
    assert self._round_sum[rk] == empty(bytes32), "already published"
    assert digest != empty(bytes32), "bad digest"
    self._round_sum[rk] = digest
    log SumPublished(task_id=task_id, round=round, member=index, digest=digest)


@internal
def _close_round(task_id: uint256, round: uint256):
    st: uint256 = self._running_state(task_id, round)
    rk: uint256 = self._rk(task_id, round)
    deadline: uint256 = ((st >> S_START) & M40) + ((st >> S_SUBMIT) & M32)
    deadline += (st >> S_VOTE) & M32
    if block.timestamp < deadline:
        assert self._round_notvoted[rk] == 0, "too early"
    self._round_hdr[rk] = self._set(self._round_hdr[rk], 0, M8, ROUND_FAILED)
    log RoundFailed(task_id=task_id, round=round, reason=FAIL_STALLED)
    new_st: uint256 = self._move_reputations(task_id, st, rk, round, empty(bytes32), 0, True)
    self._state[task_id] = self._advance(task_id, new_st, round)


@internal
def _raise_alarm(task_id: uint256, round: uint256):
    st: uint256 = self._task_state(task_id)
    status: uint256 = st & M8
    assert status != TASK_REGISTERING, "not started"
    assert status != TASK_CLOSED, "closed task"
    rk: uint256 = self._rk(task_id, round)
    hdr: uint256 = self._round_hdr[rk]
    assert round >= 1 and round == self._good_round[task_id], "wrong round"
    cfg2: uint256 = self._cfg2[task_id]
    alarm_end: uint256 = ((hdr >> H_FINAL) & M40) + (cfg2 & M32)
    assert block.timestamp < alarm_end, "alarm closed"
    m: uint256 = self._active_member(task_id, msg.sender)
    index: uint256 = (m >> M_INDEX) & M16
    bit: uint256 = 1 << index
    alarmed: uint256 = self._round_alarmed[rk]
    assert alarmed & bit == 0, "already alarmed"
    weight: uint256 = self._rep(task_id, index)
    assert weight >= REP_ALARM, "reputation too low"
    self._round_alarmed[rk] = alarmed | bit
    # The bond: returned by a revert, kept when the alarm window closes below the threshold.
    bonded: uint256 = weight - REP_ALARM
    self._set_rep(task_id, index, bonded)
    log ReputationChanged(task_id=task_id, round=round, member=index, old=weight, new=bonded)
    new_st: uint256 = self._set(st, S_REP, M32, ((st >> S_REP) & M32) - REP_ALARM)
    alarm_weight: uint256 = ((hdr >> H_ALARM) & M32) + weight
    hdr = self._set(hdr, H_ALARM, M32, alarm_weight)
    log AlarmRaised(
        task_id=task_id, round=round, member=index, weight=weight, alarm_weight=alarm_weight
    )
    # The threshold counts the reputation active now plus what this round's alarms took out
    # of it (`_alarm_held`, this bond included): the weights count before their bonds, so the
    # total does too, and a raiser its bond ejects (after this check) stays in it. Else bonds
    # and ejections would shrink the total while the alarms still count in full.
    held: uint256 = self._alarm_held[rk] + REP_ALARM
    total: uint256 = ((new_st >> S_REP) & M32) + held
    threshold: uint256 = ((self._cfg[task_id] >> C_ALARM) & M16) * total
    if alarm_weight * BPS < threshold:
        if bonded < (cfg2 >> C2_FLOOR) & M32:
            new_st = self._eject(task_id, new_st, round, index, bonded)
            self._alarm_ejected[rk] |= bit
            held += bonded
        self._alarm_held[rk] = held
        self._round_hdr[rk] = hdr
        self._state[task_id] = new_st
        return
    self._round_hdr[rk] = self._set(hdr, 0, M8, ROUND_REVERTED)
    restored: bytes32 = self._round_base[rk]
    restored_round: uint256 = (hdr >> H_BASE) & M32
    self._good_digest[task_id] = restored
    self._good_round[task_id] = restored_round
    undone: uint256[2] = self._undo_round(task_id, new_st, rk, round)
    new_st = undone[0]
    log RoundReverted(
        task_id=task_id,
        round=round,
        restored_digest=restored,
        restored_round=restored_round,
        alarm_weight=alarm_weight,
        clawed_back=undone[1],
    )
    if status == TASK_RUNNING:
        current: uint256 = (st >> S_ROUND) & M32
        crk: uint256 = self._rk(task_id, current)
        self._round_hdr[crk] = self._set(self._round_hdr[crk], 0, M8, ROUND_ABORTED)
        log RoundFailed(task_id=task_id, round=current, reason=FAIL_ABORTED_BY_ALARM)
        new_st = self._advance(task_id, new_st, current)
    self._state[task_id] = new_st


@internal
def _close_task(task_id: uint256):
    self._owner_only(task_id)
    st: uint256 = self._state[task_id]
    status: uint256 = st & M8
    assert status <= TASK_RUNNING, "closed task"
    if status == TASK_RUNNING:
        current: uint256 = (st >> S_ROUND) & M32
        crk: uint256 = self._rk(task_id, current)
        self._round_hdr[crk] = self._set(self._round_hdr[crk], 0, M8, ROUND_ABORTED)
        log RoundFailed(task_id=task_id, round=current, reason=FAIL_TASK_CLOSED)
    self._state[task_id] = self._set(st, 0, M8, TASK_CLOSED)
    log TaskEnded(
        task_id=task_id,
        status=TASK_CLOSED,
        global_digest=self._good_digest[task_id],
        global_round=self._good_round[task_id],
    )


@internal
def _withdraw(task_id: uint256):
    st: uint256 = self._task_state(task_id)
    assert st & M8 >= TASK_FINISHED, "task running"
    assert self._settled(task_id, st), "alarm window open"
    m: uint256 = self._active_member(task_id, msg.sender)
    index: uint256 = (m >> M_INDEX) & M16
    amount: uint256 = self._payout(task_id, index, m)
    self._member[self._mkey(task_id, msg.sender)] = self._set(m, 0, M8, MEMBER_WITHDRAWN)
    stake: uint256 = (self._cfg2[task_id] >> C2_STAKE) & M96
    log Withdrawn(task_id=task_id, account=msg.sender, member=index, stake=stake, reward=amount - stake)
    self._send(msg.sender, amount)


@internal
def _claim_refund(task_id: uint256):
    self._owner_only(task_id)
    st: uint256 = self._task_state(task_id)
    assert st & M8 >= TASK_FINISHED, "task running"
    assert self._settled(task_id, st), "alarm window open"
    amount: uint256 = self._pool[task_id]
    assert self._paid[task_id] == 0 and amount > 0, "nothing to claim"
    self._pool[task_id] = 0
    log RefundClaimed(task_id=task_id, owner=msg.sender, amount=amount)
    self._send(msg.sender, amount)
