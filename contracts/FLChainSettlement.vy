# pragma version ~=0.4.3
# pragma optimize gas
"""
@title FLChainSettlement
@notice The part of FLChain that FLChain runs by delegatecall, on FLChain's storage: task
        and member registration, round settlement (rewards, reputation moves, penalties,
        ejections), failed rounds, Siren alarms and their reverts, and payouts. Call it
        through FLChain, never directly: its entry points refuse to run on its own storage.
"""

import FLChainCore as store

initializes: store

# This contract's own address: code running by delegatecall sees FLChain's address as self.
HOME: immutable(address)


@deploy
def __init__():
    HOME = self


@internal
@view
def _delegated():
    assert self != HOME, "call FLChain"






@external
def finalize_round(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256, tally: uint256):
    """@notice Run only by FLChain.vote, for the vote that reached quorum."""
    self._delegated()
    store._finalize_round(task_id, round, digest, accepted, tally)




@external
def late_vote(task_id: uint256, round: uint256, digest: bytes32, accepted: uint256):
    """@notice Run only by FLChain.vote, for a vote on the round that just finalized."""
    self._delegated()
    store._late_vote(task_id, round, digest, accepted)


@external
def close_round(task_id: uint256, round: uint256):
    self._delegated()
    store._close_round(task_id, round)


@external
def raise_alarm(task_id: uint256, round: uint256):
    self._delegated()
    store._raise_alarm(task_id, round)



@external
@nonreentrant
def withdraw(task_id: uint256):
    self._delegated()
    store._withdraw(task_id)


@external
@nonreentrant
def claim_refund(task_id: uint256):
    self._delegated()
    store._claim_refund(task_id)


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
    self._delegated()
    return store._create_task(
        config_digest, initial_digest, min_members, max_members, submit_window, vote_window,
        alarm_window, quorum_bps, alarm_bps, stake, max_rounds, rep_floor, allowlist,
        max_samples,
    )


@external
def close_task(task_id: uint256):
    self._delegated()
    store._close_task(task_id)


@external
def set_allowed(task_id: uint256, account: address, allowed: bool):
    self._delegated()
    store._set_allowed(task_id, account, allowed)
