# pragma version ~=0.4.3
# pragma optimize gas
"""
@title FLChain
@notice The on-chain coordinator of decentralized federated learning. One contract serves
        many tasks (channels). Members stake and register, commit update digests per round,
        vote reputation-weighted on (global digest, accepted bitmap) and raise Siren alarms;
        anyone can close a stalled round. Finalized rounds pay their accepted members from
        the task's reward pool; missed submissions, missed votes, failed alarms and rejected
        updates cost reputation, and members below the floor forfeit their stake to the
        pool. For secure aggregation it registers Paillier key digests, chooses each
        round's decryptor and records re-mask commitments and the decryptor's proof digest.
        Only digests and small integers live on chain.
@dev Two deployed pieces, one address: this contract holds the hot paths (submit, vote) and
     every view; FLChainSettlement, created by the constructor, holds everything else and
     runs by delegatecall on this contract's storage (both lay it out through the
     FLChainCore module). Each piece stays well under EIP-170's 24,576 bytes.
"""

import FLChainCore as store

initializes: store

# The settlement code this contract delegates to (created from the constructor argument).
SETTLEMENT: public(immutable(address))


@deploy
def __init__(settlement_code: Bytes[24576]):
    """@notice Deploy FLChain with FLChainSettlement's creation code (one transaction)."""
    SETTLEMENT = raw_create(settlement_code)


# ---------------------------------------------------------------- run by FLChainSettlement
# Each entry point below runs FLChainSettlement's function of the same signature on this
# contract's storage: msg.sender, msg.value and the revert reason pass through unchanged.


@external
@payable
def create_task(
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
    """
    @notice Open a task for registration; the first round opens when min_members joined.
            The value sent is the task's reward pool (top it up with `fund_task`).
            `alarm_bps` may not be below `quorum_bps`: fewer members than agreed on a round
            must not be able to undo it. `max_samples` caps the sample count an update
            weighs with in `consensus_weights` (0: reputation alone).
    @return The new task id (ids start at 1).
    """
    return abi_decode(raw_call(SETTLEMENT, msg.data, max_outsize=32, is_delegate_call=True), uint256)


@external
@payable
def fund_task(task_id: uint256):
    """@notice Anyone adds the value sent to a registering or running task's reward pool."""
    store._fund_task(task_id)


@external
def set_allowed(task_id: uint256, account: address, allowed: bool):
    """
    @notice Owner adds or removes an address on the task's allowlist. Removal does not
            eject a member that already joined.
    """
    raw_call(SETTLEMENT, msg.data, is_delegate_call=True)


@external
@payable
def join(
    task_id: uint256,
    peer_id: Bytes[store.MAX_PEER_ID],
    x25519: bytes32,
    he_key: bytes32,
    peer_proof: Bytes[store.MAX_PEER_PROOF],
) -> uint256:
    """
    @notice Register the caller: bind its libp2p peer id and X25519 key, deposit the stake.
            A member that joins a running task takes part from the next round.
            `he_key` is the sha256 of the member's Paillier public key blob for secure
            aggregation; zero means the member never acts as a round's decryptor.
            `peer_proof` is the peer id key's signature over (chain id, contract, task,
            caller), logged in MemberJoined for the nodes to verify: peer ids are not
            unique here, so whoever registers someone else's peer id first keeps nobody
            out, and nodes ignore a member whose proof fails.
    @return The member index (its bit in every bitmap).
    """
    return store._join(task_id, peer_id, x25519, he_key, peer_proof)


@external
def remask(task_id: uint256, round: uint256, digest: bytes32):
    """
    @notice Secure mode: after the submit window, when some eligible member did not submit,
            a submitter re-commits its update re-masked over the set of submitters (pairwise
            masks only cancel over the members in the sum). Once per member and round.
    """
    store._remask(task_id, round, digest)


@external
def publish_sum(task_id: uint256, round: uint256, digest: bytes32):
    """
    @notice Secure mode: the round's decryptor publishes the digest of the blob holding the
            decrypted sum and its proof (plaintexts and Paillier randomness), in the vote
            phase, once. Which updates the sum covers is checked off chain by the nodes.
    """
    store._publish_sum(task_id, round, digest)


@external
def close_round(task_id: uint256, round: uint256):
    """
    @notice Liveness: anyone may close the current round once its vote window has passed
            (or every eligible member voted) without quorum. The round is marked failed,
            and, when anyone voted, every eligible member that did not submit loses
            REP_NO_SUBMIT and every one that did not vote REP_NO_VOTE (members below the
            floor are ejected). The next round starts from the last good global model.
    """
    raw_call(SETTLEMENT, msg.data, is_delegate_call=True)


@external
def raise_alarm(task_id: uint256, round: uint256):
    """
    @notice Siren alarm: the caller's check says the global model of finalized `round` is
            worse than its own. Allowed for the latest good round within alarm_window
            seconds of its finalization. The caller bonds REP_ALARM of its reputation,
            returned only if the alarm succeeds. When the alarm weight reaches alarm_bps of
            the active reputation, the round is reverted to the previous good model: its
            reputation moves, ejections and rewards are undone, and a round in progress
            (trained on the bad model) is aborted and restarted.
    """
    raw_call(SETTLEMENT, msg.data, is_delegate_call=True)


@external
def close_task(task_id: uint256):
    """@notice Owner ends a task early; members may then withdraw once it is settled."""
    raw_call(SETTLEMENT, msg.data, is_delegate_call=True)


@external
def withdraw(task_id: uint256):
    """
    @notice A member that was not ejected takes its payout once the task is settled (ended,
            and its last alarm window closed): its stake, its rewards, and a share of the
            pool left at the end in proportion to its rewards (`MemberInfo.payout`).
    """
    raw_call(SETTLEMENT, msg.data, is_delegate_call=True)


@external
def claim_refund(task_id: uint256):
    """
    @notice The owner takes the reward pool back when the settled task paid no rewards at
            all (no round finalized with an active accepted member).
    """
    raw_call(SETTLEMENT, msg.data, is_delegate_call=True)


# ---------------------------------------------------------------- rounds (hot paths)


@external
def submit(task_id: uint256, round: uint256, digest: bytes32, samples: uint256,
           base_round: uint256, loss: int256):
    """
    @notice Commit the caller's update for `round` (once): the digest of its blob, the
            number of training samples, the round whose global model it started from (the
            round's base round, RoundInfo.base_round) and its training loss (fixed point).
            A digest is committed once per task: copying another member's update, or
            replaying an old one, reverts "digest taken". The claimed sample count is kept
            as claimed (the ledger shows it); `consensus_weights` caps it at max_samples.
    """
    # The checks of _running_state and _eligible_index, inlined (they run only to revert with
    # the precise reason): submit's gas budget is tight.
    st: uint256 = store._state[task_id]
    if (st & store.M8 != store.TASK_RUNNING) or ((st >> store.S_ROUND) & store.M32 != round):
        store._running_state(task_id, round)
    m: uint256 = store._member[(task_id << 160) | convert(msg.sender, uint256)]
    if (m & store.M8 != store.MEMBER_ACTIVE) or ((m >> store.M_SINCE) & store.M32 > round):
        store._eligible_index(task_id, msg.sender, round)
    assert block.timestamp < ((st >> store.S_START) & store.M40) + ((st >> store.S_SUBMIT) & store.M32), "wrong phase"
    index: uint256 = (m >> store.M_INDEX) & store.M16
    rk: uint256 = (task_id << 32) | round
    bit: uint256 = 1 << index
    unsubmitted: uint256 = store._round_unsubmitted[rk]
    assert unsubmitted & bit != 0, "already submitted"
    assert digest != empty(bytes32), "bad digest"
    assert samples >= 1 and samples <= store.M64, "bad samples"
    assert base_round == (st >> store.S_BASE) & store.M32, "bad base round"
    assert loss >= -store.LOSS_BIAS and loss < store.LOSS_BIAS, "bad loss"
    dk: bytes32 = keccak256(abi_encode(task_id, digest))
    assert store._commit_meta[dk] == 0, "digest taken"
    store._round_unsubmitted[rk] = unsubmitted ^ bit
    store._commit_digest[(rk << 8) | index] = digest
    meta: uint256 = convert(loss + store.LOSS_BIAS, uint256) << store.U_LOSS
    store._commit_meta[dk] = meta | samples | (base_round << store.U_BASE)
    log store.UpdateCommitted(
        task_id=task_id,
        round=round,
        member=index,
        digest=digest,
        samples=samples,
    )


@external
def vote(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256):
    """
    @notice Vote for a global model: its digest and the bitmap of updates it accepted.
            The vote weighs the caller's reputation; the pair that reaches quorum of the
            round's total reputation finalizes the round in this call. A vote on the
            previous round after it finalized is a late vote: it changes no tally, but an
            eligible member that did not vote at all loses REP_NO_LATE_VOTE when the
            current round ends (a late vote for another pair costs REP_BAD_VOTE then).
    """
    # The checks of _running_state and _eligible_index, inlined as in submit.
    st: uint256 = store._state[task_id]
    if (st & store.M8 != store.TASK_RUNNING) or ((st >> store.S_ROUND) & store.M32 != round):
        if (st & store.M8 == store.TASK_RUNNING) and ((st >> store.S_ROUND) & store.M32 == round + 1):
            # A late vote on the round that just finalized (FLChainSettlement.late_vote).
            raw_call(
                SETTLEMENT,
                abi_encode(
                    task_id, round, digest, accepted,
                    method_id=method_id("late_vote(uint256,uint256,bytes32,uint256)"),
                ),
                is_delegate_call=True,
            )
            return
        store._running_state(task_id, round)
    m: uint256 = store._member[(task_id << 160) | convert(msg.sender, uint256)]
    if (m & store.M8 != store.MEMBER_ACTIVE) or ((m >> store.M_SINCE) & store.M32 > round):
        store._eligible_index(task_id, msg.sender, round)
    index: uint256 = (m >> store.M_INDEX) & store.M16
    rk: uint256 = (task_id << 32) | round
    submit_end: uint256 = ((st >> store.S_START) & store.M40) + ((st >> store.S_SUBMIT) & store.M32)
    assert block.timestamp < submit_end + ((st >> store.S_VOTE) & store.M32), "wrong phase"
    unsubmitted: uint256 = store._round_unsubmitted[rk]
    if block.timestamp < submit_end:
        assert unsubmitted & store._round_eligible[rk] == 0, "wrong phase"
    bit: uint256 = 1 << index
    notvoted: uint256 = store._round_notvoted[rk]
    assert notvoted & bit != 0, "already voted"
    assert accepted & unsubmitted == 0, "bad bitmap"
    assert digest != empty(bytes32), "bad digest"
    store._round_notvoted[rk] = notvoted ^ bit
    mk: uint256 = (rk << 8) | index
    store._vote_digest[mk] = digest
    store._vote_accepted[mk] = accepted
    key: bytes32 = keccak256(abi_encode(digest, accepted))
    weight: uint256 = store._rep(task_id, index)
    tally: uint256 = store._tally[rk][key] + weight
    store._tally[rk][key] = tally
    log store.VoteCast(
        task_id=task_id,
        round=round,
        member=index,
        digest=digest,
        accepted=accepted,
        weight=weight,
        tally=tally,
    )
    hdr: uint256 = store._round_hdr[rk]
    quorum: uint256 = ((hdr >> store.H_QUORUM) & store.M16) * ((hdr >> store.H_REP) & store.M32)
    if tally > 0 and tally * store.BPS >= quorum:
        # The settlement pays the round, moves reputations and opens the next round.
        raw_call(
            SETTLEMENT,
            abi_encode(
                task_id, round, digest, accepted, tally,
                method_id=method_id("finalize_round(uint256,uint256,bytes32,uint256,uint256)"),
            ),
            is_delegate_call=True,
        )


# ---------------------------------------------------------------- views


@external
@view
def task_count() -> uint256:
    return store.task_count


@external
@view
def get_task(task_id: uint256) -> store.TaskInfo:
    return store._get_task(task_id)


@external
@view
def get_round(task_id: uint256, round: uint256) -> store.RoundInfo:
    return store._get_round(task_id, round)


@external
@view
def get_member(task_id: uint256, index: uint256) -> store.MemberInfo:
    return store._get_member(task_id, index)


@external
@view
def member_index(task_id: uint256, account: address) -> uint256:
    """@notice Index of a registered address (any status); reverts "not member"."""
    return store._member_index(task_id, account)


@external
@view
def is_allowed(task_id: uint256, account: address) -> bool:
    return store._is_allowed(task_id, account)


@external
@view
def get_update(task_id: uint256, round: uint256, index: uint256) -> store.UpdateInfo:
    return store._get_update(task_id, round, index)


@external
@view
def get_vote(task_id: uint256, round: uint256, index: uint256) -> store.VoteInfo:
    return store._get_vote(task_id, round, index)


@external
@view
def get_remask(task_id: uint256, round: uint256, index: uint256) -> bytes32:
    """@notice The member's re-masked update digest in `round`; zero when it did not remask."""
    return store._get_remask(task_id, round, index)


@external
@view
def decryptor(task_id: uint256, round: uint256) -> uint256:
    """
    @notice Secure mode: index of the member that decrypts `round`'s sum. Candidates are the
            round's eligible members with a Paillier key, narrowed to those that submitted in
            the previous round when any did; the ((round - 1) mod count)-th candidate by
            index is chosen. Reverts "no decryptor" when there is no candidate.
    """
    return store._decryptor_view(task_id, round)


@external
@view
def get_tally(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256) -> uint256:
    return store._get_tally(task_id, round, digest, accepted)


@external
@view
def reputation(task_id: uint256, index: uint256) -> uint256:
    """@notice Reputation of a member in REP_UNIT fixed point (1000 = factor 1.0)."""
    return store._reputation(task_id, index)


@external
@view
def reputations(task_id: uint256) -> DynArray[uint256, store.MAX_MEMBERS]:
    """@notice Reputation of every member by index (REP_UNIT fixed point)."""
    return store._reputations(task_id)


@external
@view
def consensus_weights(task_id: uint256, round: uint256) -> DynArray[uint256, store.MAX_MEMBERS]:
    """
    @notice Aggregation weight of each member's update in `round`: min(samples, max_samples)
            times the member's current reputation (REP_UNIT fixed point), or the reputation
            alone when the task's max_samples is 0; 0 where nothing was submitted.
    """
    return store._consensus_weights(task_id, round)
