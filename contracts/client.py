"""Typed client of the FLChain contract: one method per entry point and per view.

    client = FLChainClient.deploy(w3, account)            # or FLChainClient(w3, addr, account)
    task_id = client.create_task(TaskParams(...))
    index = client.join(task_id, peer_id, x25519_public_key, peer_proof=proof)  # pays the stake
    client.submit(task_id, round, digest, samples, base_round, loss)
    client.vote(task_id, round, global_digest, bitmap([0, 2, 3]))

Secure mode adds `join(..., he_key=sha256(paillier_public_blob))`, `decryptor`, `remask`
(after a dropout) and `publish_sum` (the decryptor's proof digest).

Transactions return a TxResult with the contract events they emitted; views return the
dataclasses of `flchain.contracts.types`. Errors are FLChainError subclasses; a revert is
ContractRevert whose `reason` is the contract's string ("wrong phase", "not member", ...).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_utils import event_abi_to_log_topic
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import Web3RPCError
from web3.types import TxReceipt

from flchain.contracts.artifact import load_artifact
from flchain.contracts.errors import (
    ContractRevert,
    FLChainError,
    InvalidArgumentError,
    RPCError,
    error_object_revert,
)
from flchain.contracts.rpc import is_transient
from flchain.contracts.sender import TransactionSender
from flchain.contracts.types import (
    INT64_MAX,
    INT64_MIN,
    MAX_MEMBERS,
    MAX_PEER_ID,
    MAX_PEER_PROOF,
    MemberInfo,
    RoundInfo,
    TaskInfo,
    TaskParams,
    UpdateCommit,
    Vote,
    check_bytes32,
    check_uint,
)
from flchain.contracts.views import ViewCodec, view_codecs

if TYPE_CHECKING:  # eth_account loads with the first key, not with every reader
    from eth_account.signers.local import LocalAccount

log = logging.getLogger(__name__)

# Gas limits for calls whose cost depends on state that may change between estimation and
# inclusion (measurements: the "gas" section of docs/benchmarks.md). Unused gas is not
# charged, so a generous limit costs nothing.
OPEN_ROUND_GAS = 400_000
# Gas limit for the round's fixed-cost calls (submit, remask, publish_sum: at most 80,000 in
# bench-gas), with headroom for other forks' pricing. These and the vote, whose bound is
# finalize_gas_bound, are sent without eth_estimateGas: every member sends them every round,
# and an estimate runs the call again on the chain (py-evm's search, several runs). A call
# that would revert is mined as failed and raises the same ContractRevert, with its reason.
ROUND_CALL_GAS = 150_000
FINALIZE_BASE_GAS = 480_000
FINALIZE_GAS_PER_MEMBER = 44_000
# Calls per JSON-RPC batch for the many-views helpers (endpoints commonly accept 100).
VIEW_BATCH = 100
CLOCK_LAG = 2.0
"""Seconds the latest block may lag the wall clock before `keep_time` asks for a block."""


def finalize_gas_bound(n_members: int) -> int:
    """Gas limit for a vote that may finalize a round of `n_members` members."""
    return FINALIZE_BASE_GAS + FINALIZE_GAS_PER_MEMBER * max(n_members, 1)


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction and the FLChain events it emitted."""

    tx_hash: str
    block_number: int
    gas_used: int
    fee_wei: int
    events: list[dict[str, Any]]

    def event(self, name: str) -> dict[str, Any]:
        """Arguments of the first event called `name` (KeyError when none was emitted)."""
        for ev in self.events:
            if ev["event"] == name:
                return ev["args"]
        raise KeyError(f"transaction {self.tx_hash} emitted no {name} event")


def _normalize(value: Any) -> Any:
    if isinstance(value, HexBytes | bytearray):
        return bytes(value)
    return value


def deploy(w3: Web3, account: LocalAccount, **sender_options: Any) -> str:
    """Deploy the packaged FLChain bytecode from `account`; returns the contract address."""
    return FLChainClient.deploy(w3, account, **sender_options).address


_UNSET = object()


class _BatchRefusedError(FLChainError):
    """The endpoint, or web3's provider for it, does not take JSON-RPC batches."""


def _call_result(answer: Any) -> bytes:
    """The bytes an eth_call answered: a revert raises ContractRevert with the contract's
    reason, another error Web3RPCError (which `is_transient` judges for a retry)."""
    if not isinstance(answer, dict):
        raise RPCError(f"eth_call answered {answer!r:.200}")
    error = answer.get("error")
    if error is not None:
        reason = error_object_revert(error)
        if reason is not None:
            raise ContractRevert(reason)
        message = error.get("message") if isinstance(error, dict) else error
        raise Web3RPCError(str(message), rpc_response=answer)
    result = answer.get("result")
    if isinstance(result, str) and result.startswith("0x"):
        try:
            return bytes.fromhex(result[2:])
        except ValueError:
            pass
    raise RPCError(f"eth_call answered no data: {result!r:.200}")


class FLChainClient:
    """FLChain at `address`, sending as `account` (signed locally, never node-managed).

    Keyword options go to TransactionSender: retry (RetryPolicy), nonces (share one
    NonceManager between clients of the same account), receipt_timeout, poll_interval,
    gas_multiplier, priority_fee.
    """

    def __init__(
        self, w3: Web3, address: str, account: LocalAccount, **sender_options: Any
    ) -> None:
        if not Web3.is_address(address):
            raise InvalidArgumentError(f"not an address: {address!r}")
        artifact = load_artifact()
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.sender = TransactionSender(w3, account, **sender_options)
        self._contract = w3.eth.contract(address=self.address, abi=artifact.abi)
        self._events_by_topic = {
            HexBytes(event_abi_to_log_topic(item)): item["name"]
            for item in artifact.abi
            if item["type"] == "event"
        }
        self._max_members_cache: dict[int, int] = {}
        self._can_mine: bool | None = None  # evm_mine offered? (None: not tried yet)
        self._batches = True  # JSON-RPC batches of views, until the endpoint refuses one
        self._view_sender: object = _UNSET

    @classmethod
    def read_only(cls, w3: Web3, address: str) -> FLChainClient:
        """A client that reads and never signs (no key, no eth_account import): what status
        views, ledgers and the explorer need."""
        return cls(w3, address, _NoKey())  # type: ignore[arg-type]

    @classmethod
    def deploy(cls, w3: Web3, account: LocalAccount, **sender_options: Any) -> FLChainClient:
        """Deploy a new FLChain and return a client for it (sharing the deployer's nonces)."""
        sender = TransactionSender(w3, account, **sender_options)
        receipt = sender.send(None, load_artifact().deploy_data(), what="deploy FLChain")
        options = {**sender_options, "nonces": sender.nonces}
        return cls(w3, receipt["contractAddress"], account, **options)

    @property
    def account(self) -> str:
        return self.sender.address

    # ------------------------------------------------------------------ plumbing

    def _transact(
        self,
        fn: str,
        args: list[Any],
        *,
        value: int = 0,
        gas_floor: int = 0,
        gas_limit: int | None = None,
    ) -> TxResult:
        data = self._contract.encode_abi(fn, args)
        receipt = self.sender.send(
            self.address, data, value=value, gas_floor=gas_floor, gas_limit=gas_limit, what=fn
        )
        return TxResult(
            tx_hash=HexBytes(receipt["transactionHash"]).to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            fee_wei=int(receipt["gasUsed"]) * int(receipt.get("effectiveGasPrice", 0)),
            events=self._decode_receipt(receipt),
        )

    def _view(self, fn: str, *args: Any) -> Any:
        codec = view_codecs()[fn]
        call = [self._call_object(codec, args), "latest"]
        return self.sender.rpc(
            lambda: codec.decode(_call_result(self.w3.provider.make_request("eth_call", call))),
            fn,
        )

    def _call_object(self, codec: ViewCodec, args: Sequence[Any]) -> dict[str, str]:
        call = {"to": self.address, "data": codec.calldata(args)}
        reader = self._reader()
        return call if reader is None else {"from": reader, **call}

    def _reader(self) -> str | None:
        """The "from" of every view call: none, as web3 sends them over HTTP (no view depends
        on the caller, and a chain that caches a block's calls, as the devnet's does, answers
        N nodes' identical reads with one EVM run only if they match); eth-tester requires
        one, and gets its first account, as web3's middleware for it fills in."""
        if self._view_sender is _UNSET:
            tester = isinstance(self.w3.provider, EthereumTesterProvider)
            self._view_sender = self.w3.eth.accounts[0] if tester else None
        return self._view_sender  # type: ignore[return-value]

    def _views(self, fn: str, arg_lists: Sequence[Sequence[Any]]) -> list[Any]:
        """Many calls of one view in JSON-RPC batches of VIEW_BATCH (one round trip each),
        results in order; an endpoint that refuses batches gets the calls one by one."""
        out: list[Any] = []
        for start in range(0, len(arg_lists), VIEW_BATCH):
            chunk = arg_lists[start : start + VIEW_BATCH]
            out += self._batch_calls([(fn, args) for args in chunk])
        return out

    def _batch_calls(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Views `(name, args)` in one JSON-RPC batch, results in order; one by one where the
        endpoint (or web3's provider for it) takes no batches."""
        if self._batches:
            what = "+".join(dict.fromkeys(fn for fn, _ in calls))
            try:
                return self.sender.rpc(lambda: self._batch_once(calls), what)
            except _BatchRefusedError as exc:
                log.info("batch of views refused (%s); reading them one by one", exc)
                self._batches = False
        return [self._view(fn, *args) for fn, args in calls]

    def _batch_once(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        codecs = [view_codecs()[fn] for fn, _ in calls]
        requests = [
            ("eth_call", [self._call_object(codec, args), "latest"])
            for codec, (_, args) in zip(codecs, calls, strict=True)
        ]
        try:
            answers = self.w3.provider.make_batch_request(requests)  # type: ignore[arg-type]
        except Exception as exc:
            if is_transient(exc):
                raise
            raise _BatchRefusedError(str(exc) or type(exc).__name__) from exc
        if not isinstance(answers, list) or len(answers) != len(requests):
            raise _BatchRefusedError(f"a batch of {len(requests)} calls answered {answers!r:.200}")
        return [
            codec.decode(_call_result(answer))
            for codec, answer in zip(codecs, answers, strict=True)
        ]

    def _decode_log(self, log: Any) -> dict[str, Any] | None:
        topics = log["topics"]
        name = self._events_by_topic.get(HexBytes(topics[0])) if topics else None
        if name is None:
            return None
        decoded = getattr(self._contract.events, name)().process_log(log)
        return {
            "event": name,
            "block_number": int(decoded["blockNumber"]),
            "tx_hash": HexBytes(decoded["transactionHash"]).to_0x_hex(),
            "log_index": int(decoded["logIndex"]),
            "args": {k: _normalize(v) for k, v in decoded["args"].items()},
        }

    def _decode_receipt(self, receipt: TxReceipt) -> list[dict[str, Any]]:
        out = []
        for log in receipt["logs"]:
            if Web3.to_checksum_address(log["address"]) != self.address:
                continue
            decoded = self._decode_log(log)
            if decoded is not None:
                out.append(decoded)
        return out

    def keep_time(self, now: float) -> bool:
        """Ask a chain whose clock stands still for a block, so its time catches up with `now`.

        A chain that mines only when a transaction arrives (anvil's and the devnet's automine)
        keeps the timestamp of its last block: once every member has committed, the vote
        phase never opens on chain, each vote's gas estimate reverts ("phase") and is not
        sent, and nothing moves time forward again. When the latest block is more than
        CLOCK_LAG seconds behind `now`, this calls `evm_mine` (anvil, hardhat, ganache and
        `flchain chain serve` offer it); an endpoint without it is a chain that makes blocks by
        itself, and is left alone from then on. Returns whether a block was asked for."""
        if self._can_mine is False:
            return False
        latest = self.sender.rpc(lambda: self.w3.eth.get_block("latest"), "latest block")
        if int(latest["timestamp"]) >= now - CLOCK_LAG:
            return False
        try:
            reply = self.sender.rpc(
                lambda: self.w3.provider.make_request("evm_mine", []), "evm_mine"
            )
        except RPCError:  # refused outright (an HTTP error, say): the same answer as "no"
            reply = {"error": "evm_mine refused"}
        self._can_mine = "error" not in reply
        return self._can_mine

    def _max_members(self, task_id: int) -> int:
        """The task's member cap: fixed at creation, so cached, and a safe gas-bound input."""
        if task_id not in self._max_members_cache:
            self._max_members_cache[task_id] = self.get_task(task_id).max_members
        return self._max_members_cache[task_id]

    # ------------------------------------------------------------------ entry points

    def create_task(self, params: TaskParams) -> int:
        """Create a task (the caller becomes its owner); returns the new task id."""
        return int(self.create_task_tx(params).event("TaskCreated")["task_id"])

    def create_task_tx(self, params: TaskParams) -> TxResult:
        """`create_task` returning the whole transaction (hash, block, gas, events), for
        callers that report it; the task id is `result.event("TaskCreated")["task_id"]`."""
        return self._transact("create_task", params.as_args(), value=params.reward)

    def fund_task(self, task_id: int, amount: int) -> TxResult:
        """Add `amount` wei to a registering or running task's reward pool (anyone may)."""
        if check_uint("amount", amount) == 0:
            raise InvalidArgumentError("amount must be positive")
        return self._transact("fund_task", [check_uint("task_id", task_id)], value=amount)

    def set_allowed(self, task_id: int, account: str, allowed: bool = True) -> TxResult:
        """Owner only: add (or remove) `account` on the task's allowlist."""
        if not Web3.is_address(account):
            raise InvalidArgumentError(f"not an address: {account!r}")
        args = [check_uint("task_id", task_id), Web3.to_checksum_address(account), allowed]
        return self._transact("set_allowed", args)

    def join(
        self,
        task_id: int,
        peer_id: bytes,
        x25519: bytes,
        he_key: bytes = bytes(32),
        *,
        peer_proof: bytes = b"",
        value: int | None = None,
    ) -> int:
        """Register with the libp2p peer id and X25519 public key, paying `value` wei (the
        task's stake when None); returns the member index. May open the first round.

        `he_key` is the sha256 of the member's Paillier public key blob (secure mode); the
        default, zero, means this member is never chosen as a round's decryptor.
        `peer_proof` is `flchain.node.peer_proof.sign(...)`: nodes ignore a member whose
        proof does not verify, so a node always sends one (the empty default is for tests
        and tools that never run a node)."""
        # Longer values cannot even be decoded by the contract (it would revert without reason).
        if not isinstance(peer_id, bytes | bytearray) or len(peer_id) > MAX_PEER_ID:
            raise InvalidArgumentError(f"peer_id must be at most {MAX_PEER_ID} bytes")
        if not isinstance(peer_proof, bytes | bytearray) or len(peer_proof) > MAX_PEER_PROOF:
            raise InvalidArgumentError(f"peer_proof must be at most {MAX_PEER_PROOF} bytes")
        args = [
            check_uint("task_id", task_id),
            bytes(peer_id),
            check_bytes32("x25519", x25519),
            check_bytes32("he_key", he_key),
            bytes(peer_proof),
        ]
        stake = self.get_task(task_id).stake if value is None else check_uint("value", value)
        result = self._transact("join", args, value=stake, gas_floor=OPEN_ROUND_GAS)
        return int(result.event("MemberJoined")["member"])

    def submit(
        self,
        task_id: int,
        round: int,
        digest: bytes,
        samples: int,
        base_round: int,
        loss: int,
    ) -> TxResult:
        """Commit this round's update: blob digest, sample count, base round and training
        loss as a fixed-point int64 (`encode_loss(x)`: millionths)."""
        if type(loss) is not int or not INT64_MIN <= loss <= INT64_MAX:
            raise InvalidArgumentError(f"loss must be an int64 fixed-point integer, got {loss!r}")
        args = [
            check_uint("task_id", task_id),
            check_uint("round", round),
            check_bytes32("digest", digest),
            check_uint("samples", samples),
            check_uint("base_round", base_round),
            loss,
        ]
        return self._transact("submit", args, gas_limit=ROUND_CALL_GAS)

    def vote(self, task_id: int, round: int, digest: bytes, accepted: int) -> TxResult:
        """Vote (global digest, accepted bitmap); the vote that reaches quorum finalizes."""
        args = [
            check_uint("task_id", task_id),
            check_uint("round", round),
            check_bytes32("digest", digest),
            check_uint("accepted", accepted),
        ]
        bound = finalize_gas_bound(self._max_members(task_id))
        return self._transact("vote", args, gas_limit=bound)

    def remask(self, task_id: int, round: int, digest: bytes) -> TxResult:
        """Secure mode: after the submit window, when an eligible member did not submit,
        commit this member's update re-masked over the submitters (once per round)."""
        args = [
            check_uint("task_id", task_id),
            check_uint("round", round),
            check_bytes32("digest", digest),
        ]
        return self._transact("remask", args, gas_limit=ROUND_CALL_GAS)

    def publish_sum(self, task_id: int, round: int, digest: bytes) -> TxResult:
        """Secure mode, the round's decryptor only: publish the digest of the blob with the
        decrypted sum and its proof, in the vote phase (once per round)."""
        args = [
            check_uint("task_id", task_id),
            check_uint("round", round),
            check_bytes32("digest", digest),
        ]
        return self._transact("publish_sum", args, gas_limit=ROUND_CALL_GAS)

    def close_round(self, task_id: int, round: int) -> TxResult:
        """Liveness: fail a round whose windows passed without quorum; opens the next."""
        args = [check_uint("task_id", task_id), check_uint("round", round)]
        # Closing moves every eligible member's reputation (penalties), like a finalization.
        floor = finalize_gas_bound(self._max_members(task_id))
        return self._transact("close_round", args, gas_floor=floor)

    def raise_alarm(self, task_id: int, round: int) -> TxResult:
        """Siren alarm on the latest finalized round; enough weight reverts it."""
        args = [check_uint("task_id", task_id), check_uint("round", round)]
        # The alarm that reverts undoes the round's moves for every member and opens a round.
        floor = finalize_gas_bound(self._max_members(task_id))
        return self._transact("raise_alarm", args, gas_floor=floor)

    def close_task(self, task_id: int) -> TxResult:
        """Owner only: end the task now (members may then withdraw)."""
        return self._transact("close_task", [check_uint("task_id", task_id)])

    def withdraw(self, task_id: int) -> TxResult:
        """Take the payout (stake, rewards, share of the pool left) once the task is settled
        (ended and its last alarm window closed; not for ejected members)."""
        return self._transact("withdraw", [check_uint("task_id", task_id)])

    def claim_refund(self, task_id: int) -> TxResult:
        """Owner only: take the reward pool back when the settled task paid no rewards."""
        return self._transact("claim_refund", [check_uint("task_id", task_id)])

    # ------------------------------------------------------------------ views

    def task_count(self) -> int:
        return int(self._view("task_count"))

    def get_task(self, task_id: int) -> TaskInfo:
        return TaskInfo.from_tuple(self._view("get_task", check_uint("task_id", task_id)))

    def get_round(self, task_id: int, round: int) -> RoundInfo:
        raw = self._view("get_round", check_uint("task_id", task_id), check_uint("round", round))
        return RoundInfo.from_tuple(raw)

    def task_and_round(self, task_id: int, round: int) -> tuple[TaskInfo, RoundInfo]:
        """`get_task` and `get_round` in one JSON-RPC batch (one round trip): what a node
        reads on nearly every new block. An endpoint that refuses batches gets two calls."""
        task_id, round = check_uint("task_id", task_id), check_uint("round", round)
        raw_task, raw_round = self._batch_calls(
            [("get_task", (task_id,)), ("get_round", (task_id, round))]
        )
        return TaskInfo.from_tuple(raw_task), RoundInfo.from_tuple(raw_round)

    def get_member(self, task_id: int, index: int) -> MemberInfo:
        raw = self._view(
            "get_member", check_uint("task_id", task_id), check_uint("index", index, MAX_MEMBERS)
        )
        return MemberInfo.from_tuple(raw)

    def members(self, task_id: int) -> list[MemberInfo]:
        """Every member that ever joined the task, by index (batched views)."""
        n_members = self.get_task(task_id).n_members
        raws = self._views("get_member", [(task_id, i) for i in range(n_members)])
        return [MemberInfo.from_tuple(raw) for raw in raws]

    def member_index(self, task_id: int, account: str) -> int:
        """Index of `account` in the task; ContractRevert("not member") otherwise."""
        if not Web3.is_address(account):
            raise InvalidArgumentError(f"not an address: {account!r}")
        checksum = Web3.to_checksum_address(account)
        return int(self._view("member_index", check_uint("task_id", task_id), checksum))

    def is_allowed(self, task_id: int, account: str) -> bool:
        if not Web3.is_address(account):
            raise InvalidArgumentError(f"not an address: {account!r}")
        checksum = Web3.to_checksum_address(account)
        return bool(self._view("is_allowed", check_uint("task_id", task_id), checksum))

    def get_update(self, task_id: int, round: int, index: int) -> UpdateCommit:
        raw = self._view(
            "get_update",
            check_uint("task_id", task_id),
            check_uint("round", round),
            check_uint("index", index, MAX_MEMBERS),
        )
        return UpdateCommit.from_tuple(raw)

    def get_vote(self, task_id: int, round: int, index: int) -> Vote:
        raw = self._view(
            "get_vote",
            check_uint("task_id", task_id),
            check_uint("round", round),
            check_uint("index", index, MAX_MEMBERS),
        )
        return Vote.from_tuple(raw)

    def get_remask(self, task_id: int, round: int, index: int) -> bytes | None:
        """The member's re-masked update digest in `round`, None when it did not remask."""
        raw = bytes(
            self._view(
                "get_remask",
                check_uint("task_id", task_id),
                check_uint("round", round),
                check_uint("index", index, MAX_MEMBERS),
            )
        )
        return None if raw == bytes(32) else raw

    def decryptor(self, task_id: int, round: int) -> int | None:
        """Secure mode: index of the member that decrypts `round`'s sum, None when no
        eligible member registered a Paillier key. Fixed for the whole round."""
        try:
            raw = self._view(
                "decryptor", check_uint("task_id", task_id), check_uint("round", round)
            )
        except ContractRevert as exc:
            if exc.reason == "no decryptor":
                return None
            raise
        return int(raw)

    def get_tally(self, task_id: int, round: int, digest: bytes, accepted: int) -> int:
        """Reputation weight voted so far for the pair (digest, accepted) in `round`."""
        return int(
            self._view(
                "get_tally",
                check_uint("task_id", task_id),
                check_uint("round", round),
                check_bytes32("digest", digest),
                check_uint("accepted", accepted),
            )
        )

    # Many views in few round trips, for readers of a whole ledger (`flchain ledger`).

    def get_rounds(self, task_id: int, rounds: Sequence[int]) -> list[RoundInfo]:
        """`get_round` for each of `rounds`, in order."""
        check_uint("task_id", task_id)
        args = [(task_id, check_uint("round", r)) for r in rounds]
        return [RoundInfo.from_tuple(raw) for raw in self._views("get_round", args)]

    def get_updates(self, task_id: int, keys: Sequence[tuple[int, int]]) -> list[UpdateCommit]:
        """`get_update` for each (round, member index) in `keys`, in order."""
        check_uint("task_id", task_id)
        args = [
            (task_id, check_uint("round", r), check_uint("index", i, MAX_MEMBERS)) for r, i in keys
        ]
        return [UpdateCommit.from_tuple(raw) for raw in self._views("get_update", args)]

    def get_votes(self, task_id: int, keys: Sequence[tuple[int, int]]) -> list[Vote]:
        """`get_vote` for each (round, member index) in `keys`, in order."""
        check_uint("task_id", task_id)
        args = [
            (task_id, check_uint("round", r), check_uint("index", i, MAX_MEMBERS)) for r, i in keys
        ]
        return [Vote.from_tuple(raw) for raw in self._views("get_vote", args)]

    def get_tallies(self, task_id: int, keys: Sequence[tuple[int, bytes, int]]) -> list[int]:
        """`get_tally` for each (round, digest, accepted bitmap) in `keys`, in order."""
        check_uint("task_id", task_id)
        args = [
            (task_id, check_uint("round", r), check_bytes32("digest", d), check_uint("accepted", a))
            for r, d, a in keys
        ]
        return [int(raw) for raw in self._views("get_tally", args)]

    def reputation(self, task_id: int, index: int) -> int:
        raw = self._view(
            "reputation", check_uint("task_id", task_id), check_uint("index", index, MAX_MEMBERS)
        )
        return int(raw)

    def reputations(self, task_id: int) -> list[int]:
        """Reputation of every member by index (REP_UNIT = 1000 is a factor of 1.0)."""
        return [int(r) for r in self._view("reputations", check_uint("task_id", task_id))]

    def consensus_weights(self, task_id: int, round: int) -> list[int]:
        """Aggregation weight per member index: min(samples, max_samples) x reputation, or
        the reputation alone when the task's max_samples is 0 (0: no update)."""
        raw = self._view(
            "consensus_weights", check_uint("task_id", task_id), check_uint("round", round)
        )
        return [int(w) for w in raw]

    def member_proofs(self, task_id: int, from_block: int = 0) -> dict[int, bytes]:
        """Member index -> the peer-id proof it joined with (from MemberJoined logs; the
        contract keeps proofs only there). Check them with `flchain.node.peer_proof.verify`."""
        joined = self.events(task_id, from_block, event="MemberJoined")
        return {int(ev["args"]["member"]): bytes(ev["args"]["peer_proof"]) for ev in joined}

    # ------------------------------------------------------------------ ledger

    def events(
        self,
        task_id: int,
        from_block: int = 0,
        to_block: int | str = "latest",
        *,
        chunk_blocks: int | None = None,
        event: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every FLChain event of one task in block order: the ledger, rebuilt from logs.

        Each item is {"event", "block_number", "tx_hash", "log_index", "args"}. Pass
        chunk_blocks for endpoints that cap the block range of eth_getLogs, and `event` (a
        name such as "MemberJoined") to ask the endpoint for that event only.
        """
        check_uint("task_id", task_id)
        if chunk_blocks is not None and chunk_blocks < 1:
            raise InvalidArgumentError(f"chunk_blocks must be >= 1, got {chunk_blocks}")
        topic0 = None
        if event is not None:
            topic0 = next((t for t, n in self._events_by_topic.items() if n == event), None)
            if topic0 is None:
                raise InvalidArgumentError(f"FLChain has no event {event!r}")
        last = (
            int(self.sender.rpc(lambda: self.w3.eth.block_number, "block number"))
            if to_block == "latest"
            else check_uint("to_block", int(to_block))
        )
        topic = HexBytes(task_id.to_bytes(32, "big")).to_0x_hex()
        step = chunk_blocks or max(last - from_block + 1, 1)
        out: list[dict[str, Any]] = []
        for start in range(check_uint("from_block", from_block), last + 1, step):
            flt = {
                "address": self.address,
                "fromBlock": start,
                "toBlock": min(start + step - 1, last),
                "topics": [topic0.to_0x_hex() if topic0 is not None else None, topic],
            }
            logs = self.sender.rpc(lambda flt=flt: self.w3.eth.get_logs(flt), "eth_getLogs")
            for log in logs:
                decoded = self._decode_log(log)
                if decoded is None:
                    raise RPCError(f"unknown event topic in log {log!r:.200}")
                out.append(decoded)
        out.sort(key=lambda ev: (ev["block_number"], ev["log_index"]))
        return out


class _NoKey:
    """The account of a read-only client: it has an address to read as (calls from the zero
    address) and refuses to sign."""

    address = "0x" + "00" * 20

    def sign_transaction(self, transaction: Any) -> Any:
        raise FLChainError("this client only reads: it holds no key to sign a transaction")
