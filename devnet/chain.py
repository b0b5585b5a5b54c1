"""The devnet chain: eth-tester's py-evm backend with mining, time control and a replay journal.

Model. The chain has mined blocks up to `latest` and one pending block being built on top. An
empty pending block is (re)opened with a fresh timestamp and a deterministic prevrandao right
before it is used, so transactions execute with the time at which they arrive; in automine mode
every accepted transaction is mined at once, otherwise a timer calls `mine()`.

Journal. Every state change appends records that replay it without consulting the clock:

    {"op": "genesis", "version", "config", "hash"}   first line: how to rebuild block 0
    {"op": "open", "ts"}                  (re)open the pending block at timestamp ts
    {"op": "tx", "raw", "hash"}           apply a signed raw transaction to the pending block
    {"op": "mine", "number", "hash", "ts"}  seal the pending block (hash checked on replay)
    {"op": "clock", "offset", "next_ts"}  time-travel state (evm_increaseTime and friends)
    {"op": "snapshot", "id"} / {"op": "revert", "id"}

Replay rebuilds a fresh chain from these and compares every block hash with the journaled one,
so a journal that does not reproduce its chain is refused instead of serving a different state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eth.abc import BlockAPI, BlockHeaderAPI, ReceiptAPI, SignedTransactionAPI, StateAPI
from eth.exceptions import HeaderNotFound, TransactionNotFound
from eth.vm.forks.berlin.transactions import TypedTransaction
from eth.vm.spoof import SpoofTransaction
from eth_utils import ValidationError as EthValidationError
from eth_utils import keccak

from flchain.devnet.accounts import DevAccount
from flchain.devnet.encoding import BlockHashRef, BlockTag, to_data
from flchain.devnet.errors import (
    ExecutionTimeoutError,
    InvalidParamsError,
    ResourceNotFoundError,
    RpcError,
    TransactionRejectedError,
)
from flchain.devnet.execution import call_transaction, estimate_gas, run_call
from flchain.devnet.genesis import GenesisConfig, build_backend
from flchain.devnet.journal import JOURNAL_FILE, Journal, JournalError, read_journal
from flchain.devnet.policy import CallLimits
from flchain.devnet.txargs import TxArgs

JOURNAL_VERSION = 1
MAX_MINE_BLOCKS = 10_000
# eth_call answers kept until the next state change (`DevChain.call`): N nodes that read the
# same round at the same block cost one EVM run, not N.
CALL_CACHE_SIZE = 4096
_BLOB_TX_TYPE = 3

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TxLocation:
    """Where a transaction sits: its block (the pending one while not mined) and index."""

    block: BlockAPI
    index: int
    transaction: SignedTransactionAPI
    pending: bool


class DevChain:
    """A single-node Ethereum chain; every public method is safe to call from any thread."""

    def __init__(
        self,
        genesis: GenesisConfig | None = None,
        *,
        automine: bool = True,
        clock: Callable[[], float] = time.time,
        call_limits: CallLimits | None = None,
    ) -> None:
        genesis = genesis or GenesisConfig()
        if genesis.timestamp is None:
            genesis = replace(genesis, timestamp=int(clock()))
        self.genesis = genesis
        self.automine = automine
        self.call_limits = call_limits or CallLimits()
        self.lock = threading.RLock()
        self._clock = clock
        self._backend, self.accounts = build_backend(genesis)
        self._keys = {account.canonical_address: account for account in self.accounts}
        self._pending: list[SignedTransactionAPI] = []
        self._pending_open = False
        self._time_offset = 0
        self._next_timestamp: int | None = None
        self._snapshots: dict[int, bytes] = {}
        self._snapshot_counter = 0
        self._journal: Journal | None = None
        self._records: list[dict[str, Any]] = []
        self._failure: str | None = None
        self._call_cache: dict[Any, bytes] = {}
        self._block_listeners: tuple[Callable[[BlockAPI], None], ...] = ()
        self._unannounced: list[BlockAPI] = []  # mined, told to the listeners once published
        self._cache_lock = threading.Lock()
        self._flights: dict[Any, _Flight] = {}  # calls running now, for twins to wait on
        self._generation = 0  # bumped by every state change (the pending block's calls key on it)
        self._published: tuple[Any, BlockHeaderAPI, int] = (
            self._chain,
            self._head(),
            self._generation,
        )

    # ------------------------------------------------------------------ persistence

    @classmethod
    def open(
        cls,
        state_dir: Path,
        genesis: GenesisConfig | None = None,
        *,
        must_match: Collection[str] = (),
        automine: bool = True,
        clock: Callable[[], float] = time.time,
        call_limits: CallLimits | None = None,
    ) -> DevChain:
        """A chain journaled in `state_dir`: replayed from it if it exists, else created.

        When the directory already holds a chain, its genesis wins; the fields of `genesis`
        named in `must_match` (settings the user asked for explicitly) must agree with it.
        """
        journal, records = Journal.open(Path(state_dir))
        try:
            if records:
                stored = _genesis_from_record(records[0], journal.path)
                _check_match(stored, genesis, must_match)
                chain = cls(stored, automine=automine, clock=clock, call_limits=call_limits)
                if chain._genesis_record()["hash"] != records[0].get("hash"):
                    raise JournalError(f"{journal.path}: the rebuilt genesis block differs")
                chain._replay(records[1:], journal.path)
            else:
                chain = cls(genesis, automine=automine, clock=clock, call_limits=call_limits)
                chain._records.append(chain._genesis_record())
            chain._journal = journal
            with chain._mutating():
                if chain.automine and chain._pending:
                    chain._mine_one()
        except BaseException:
            journal.close()
            raise
        return chain

    @classmethod
    def open_read_only(cls, state_dir: Path, *, call_limits: CallLimits | None = None) -> DevChain:
        """The chain journaled in `state_dir`, replayed in memory for reading only.

        The journal is read, never locked, cut or created: a chain still writing it is not
        disturbed (its last, possibly torn, line is just skipped). Every state change on the
        result is refused, so nothing can drift from what the journal says.
        """
        path = Path(state_dir) / JOURNAL_FILE
        if not path.is_file():
            raise JournalError(f"no chain journal at {path}")
        records = read_journal(Path(state_dir))
        if not records:
            raise JournalError(f"{path} holds no records")
        stored = _genesis_from_record(records[0], path)
        chain = cls(stored, automine=False, call_limits=call_limits)
        if chain._genesis_record()["hash"] != records[0].get("hash"):
            raise JournalError(f"{path}: the rebuilt genesis block differs")
        chain._replay(records[1:], path)
        chain._failure = f"it is a read-only replay of {path}"
        return chain

    def close(self) -> None:
        """Release the journal (and its directory lock); later state changes are refused."""
        with self.lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self._failure = "it has been shut down"

    def _genesis_record(self) -> dict[str, Any]:
        genesis_hash = self._chain.get_canonical_block_header_by_number(0).hash
        return {
            "op": "genesis",
            "version": JOURNAL_VERSION,
            "config": self.genesis.to_json(),
            "hash": to_data(genesis_hash),
        }

    def _replay(self, records: list[dict[str, Any]], path: Path) -> None:
        genesis_hash = self._chain.get_canonical_block_header_by_number(0).hash
        for number, record in enumerate(records, start=2):
            try:
                self._replay_record(record)
            except (RpcError, EthValidationError, KeyError, TypeError, ValueError) as exc:
                raise JournalError(
                    f"{path}: line {number} ({record.get('op')!r}) does not replay: {exc}"
                ) from exc
        self._records.clear()
        self._forget_calls()
        self._publish()
        _log.info(
            "replayed %d journal records; genesis %s, head #%d",
            len(records),
            to_data(genesis_hash),
            self.block_number,
        )

    def _replay_record(self, record: dict[str, Any]) -> None:
        op = record["op"]
        if op == "open":
            self._open_pending(_as_int(record["ts"]))
        elif op == "tx":
            if not self._pending_open:
                raise JournalError("transaction outside an open block")
            tx = self._decode(_hex_bytes(record["raw"]))
            if to_data(tx.hash) != record["hash"]:
                raise JournalError("transaction hash differs")
            self._apply(tx)
        elif op == "mine":
            if not self._pending_open:
                raise JournalError("mined block was never opened")
            block = self._seal()
            if block.number != record["number"] or to_data(block.hash) != record["hash"]:
                raise JournalError(
                    f"replayed block #{block.number} {to_data(block.hash)} differs from the "
                    f"journaled #{record['number']} {record['hash']}"
                )
        elif op == "clock":
            self._time_offset = _as_int(record["offset"], signed=True)
            next_ts = record["next_ts"]
            self._next_timestamp = None if next_ts is None else _as_int(next_ts)
        elif op == "snapshot":
            if self._take_snapshot() != record["id"]:
                raise JournalError("snapshot id differs")
        elif op == "revert":
            if not self._revert(_as_int(record["id"])):
                raise JournalError("snapshot to revert to does not exist")
        else:
            raise JournalError(f"unknown record kind {op!r}")

    @contextmanager
    def _mutating(self) -> Iterator[None]:
        """Serialize a state change and make its journal records durable before returning."""
        with self.lock:
            if self._failure is not None:
                raise RpcError(f"the chain is read-only: {self._failure}")
            self._forget_calls()
            try:
                yield
            finally:
                self._forget_calls()
                try:
                    self._flush()
                finally:
                    self._publish()

    def _forget_calls(self) -> None:
        """A state change: calls on the pending block see other state from now on. Calls on a
        mined block key on its hash, so their answers stay good and are kept."""
        with self._cache_lock:
            self._generation += 1

    def _publish(self) -> None:
        """Make the head what lock-free reads see: only after its journal lines are durable,
        so nobody reads a block a crash could take back."""
        self._published = (self._chain, self._head(), self._generation)
        self._announce()

    # ------------------------------------------------------------------ new-block listeners

    def add_block_listener(self, listener: Callable[[BlockAPI], None]) -> None:
        """Call `listener(block)` for every block mined from now on, once reads see it (the
        WebSocket server's `eth_subscribe`). It runs on the mining thread under the chain
        lock, so it must only hand the block on: mining never waits on a subscriber."""
        self._block_listeners = (*self._block_listeners, listener)

    def remove_block_listener(self, listener: Callable[[BlockAPI], None]) -> None:
        self._block_listeners = tuple(f for f in self._block_listeners if f != listener)

    def _announce(self) -> None:
        blocks, self._unannounced = self._unannounced, []
        for block in blocks:
            for listener in self._block_listeners:
                try:
                    listener(block)
                except Exception:  # a listener's bug must not fail the block that is mined
                    _log.exception("a new-block listener failed")

    def _emit(self, record: dict[str, Any]) -> None:
        self._records.append(record)

    def _flush(self) -> None:
        records, self._records = self._records, []
        if self._journal is None or not records:
            return
        try:
            self._journal.append(records)
        except OSError as exc:
            self._failure = f"writing the state journal failed ({exc})"
            _log.error("%s; refusing further state changes", self._failure)
            raise RpcError(self._failure) from exc

    # ------------------------------------------------------------------ blocks and lookups

    @property
    def _chain(self) -> Any:
        # eth-tester replaces its chain object when reverting to genesis: never cache it.
        return self._backend.chain

    @property
    def chain_id(self) -> int:
        return self.genesis.chain_id

    @property
    def block_number(self) -> int:
        """Number of the latest mined block (the published head: no lock)."""
        return self._published[1].block_number

    @property
    def time_offset(self) -> int:
        """Seconds added to the wall clock for new blocks (evm_increaseTime)."""
        return self._time_offset

    def account(self, address: bytes) -> DevAccount | None:
        """The dev account with this address, if the server holds its key."""
        return self._keys.get(address)

    def _head(self) -> BlockHeaderAPI:
        return self._chain.get_canonical_head()

    def _canonical_header(self, number: int) -> BlockHeaderAPI | None:
        if number > self._head().block_number:
            return None
        return self._chain.get_canonical_block_header_by_number(number)

    def _header_by_hash(self, block_hash: bytes) -> BlockHeaderAPI | None:
        try:
            header = self._chain.chaindb.get_block_header_by_hash(block_hash)
        except HeaderNotFound:
            return None
        canonical = self._canonical_header(header.block_number)
        return header if canonical is not None and canonical.hash == block_hash else None

    def _header_for(self, tag: BlockTag) -> BlockHeaderAPI:
        """The header a state query at `tag` reads (the pending header for "pending")."""
        if isinstance(tag, BlockHashRef):
            header = self._header_by_hash(tag.block_hash)
            if header is None:
                raise ResourceNotFoundError(f"block {to_data(tag.block_hash)} not found")
            return header
        if tag == "pending":
            return self._chain.header
        if tag == "earliest":
            return self._chain.get_canonical_block_header_by_number(0)
        if isinstance(tag, int):
            header = self._canonical_header(tag)
            if header is None:
                raise ResourceNotFoundError(f"header not found: block {tag} is beyond the head")
            return header
        return self._head()

    def resolve_block_number(self, tag: BlockTag) -> int:
        """The block number a tag names ("pending" is the block after the head)."""
        with self.lock:
            return self._header_for(tag).block_number

    def get_block(self, tag: BlockTag) -> BlockAPI | None:
        """A block by tag or number; None when it does not exist (yet)."""
        with self.lock:
            if tag == "pending":
                return self._chain.get_block()
            try:
                header = self._header_for(tag)
            except ResourceNotFoundError:
                return None
            return self._chain.get_block_by_header(header)

    def get_block_by_hash(self, block_hash: bytes) -> BlockAPI | None:
        """A canonical block by hash; reverted blocks are gone, as on anvil."""
        with self.lock:
            header = self._header_by_hash(block_hash)
            return None if header is None else self._chain.get_block_by_header(header)

    def is_pending(self, block: BlockAPI) -> bool:
        """Whether `block` is the block still being built."""
        with self.lock:
            return block.number > self._head().block_number

    def get_receipts(self, block: BlockAPI) -> tuple[ReceiptAPI, ...]:
        """The receipts of a block's transactions, in order."""
        with self.lock:
            return tuple(block.get_receipts(self._chain.chaindb))

    def find_transaction(self, tx_hash: bytes) -> TxLocation | None:
        """A pending or canonical transaction by hash."""
        with self.lock:
            for index, tx in enumerate(self._pending):
                if tx.hash == tx_hash:
                    return TxLocation(self._chain.get_block(), index, tx, pending=True)
            try:
                number, index = self._chain.chaindb.get_transaction_index(tx_hash)
            except TransactionNotFound:
                return None
            header = self._canonical_header(number)
            if header is None:
                return None  # the index still points into a block that a revert discarded
            block = self._chain.get_block_by_header(header)
            if index >= len(block.transactions) or block.transactions[index].hash != tx_hash:
                return None
            return TxLocation(block, index, block.transactions[index], pending=False)

    # ------------------------------------------------------------------ account state

    def _state(self, tag: BlockTag) -> StateAPI:
        return self._chain.get_vm(self._header_for(tag)).state

    def get_balance(self, address: bytes, tag: BlockTag = "latest") -> int:
        with self.lock:
            return self._state(tag).get_balance(address)

    def get_nonce(self, address: bytes, tag: BlockTag = "latest") -> int:
        with self.lock:
            return self._state(tag).get_nonce(address)

    def get_code(self, address: bytes, tag: BlockTag = "latest") -> bytes:
        with self.lock:
            return bytes(self._state(tag).get_code(address))

    def get_storage(self, address: bytes, slot: int, tag: BlockTag = "latest") -> int:
        with self.lock:
            return self._state(tag).get_storage(address, slot)

    def next_base_fee(self) -> int:
        """Base fee per gas of the pending block (what a transaction sent now pays)."""
        with self.lock:
            return self._chain.header.base_fee_per_gas

    # ------------------------------------------------------------------ execution without a tx

    def call(self, args: TxArgs, tag: BlockTag = "latest") -> bytes:
        """Execute a message call on top of `tag` and return its output (eth_call).

        Gas above `call_limits.gas_cap` is clamped to it, as geth does; a call running past
        `call_limits.timeout` is stopped with `ExecutionTimeoutError`.

        A call at "latest" takes no lock: it runs on its own state object over the published
        head's state root (`_published`, a per-block snapshot: mining only adds trie nodes,
        never changes those a mined root reaches), so reads never queue behind a transaction
        being applied, mined or written to the journal. Other tags resolve under the lock; a
        call on a pending block holding transactions runs under it, since that state moves.
        """
        if tag == "latest":
            chain, head, generation = self._published
            # The environment is a child of the head at this second: its key is known without
            # building its header, which was a tenth of the chain's CPU in views answered from
            # the cache (N nodes read the same views at each block).
            timestamp = self._fresh_timestamp(head)
            key = (head.hash, head.block_number + 1, timestamp, args)
            with self._cache_lock:
                cached = self._call_cache.get(key)
            if cached is not None:
                return cached
            env = self._child_header(chain, head, timestamp)
        else:
            with self.lock:
                chain, generation = self._chain, self._generation
                env = self._call_env(tag)
                if env is chain.header:  # pending transactions: their state moves under us
                    return self._run_call(chain, env, args, generation)
        return self._run_call(chain, env, args, generation)

    def _run_call(self, chain: Any, env: BlockHeaderAPI, args: TxArgs, generation: int) -> bytes:
        gas = min(args.gas or env.gas_limit, self.call_limits.gas_cap)
        # The answer depends on the state, the environment's block and time, and the call
        # (gas included: the environment follows from its parent and time): N nodes reading
        # the same view at the same block get one EVM run. A call on a mined block's state
        # names it by hash, which no later transaction, block or revert changes, so the
        # answer is kept across state changes. (Keyed by block number, answers had to be
        # dropped at every change, and a read that overlapped a transaction being mined and
        # journaled was not kept: at N = 16 every node ran its own; the chain's CPU per round
        # fell from 0.95 to 0.75 s.) The pending block's state moves with every transaction,
        # so its calls also key on the generation.
        moving = env is chain.header
        state = (env.parent_hash, generation) if moving else env.parent_hash
        key = (state, env.block_number, env.timestamp, args)
        # N nodes woken by the same new block ask the same views at once: while one request
        # runs a call, the others with the same call on the same state wait for its answer
        # instead of running it too (half of a 10-node devnet's EVM runs were such twins).
        flight_key = key
        with self._cache_lock:
            cached = self._call_cache.get(key)
            if cached is not None:
                return cached
            flight = self._flights.get(flight_key)
            leader = flight is None
            if leader:
                flight = self._flights[flight_key] = _Flight()
        assert flight is not None
        if not leader:
            if not flight.done.wait(2 * self.call_limits.timeout + 1):
                raise ExecutionTimeoutError("eth_call: the same call running already timed out")
            if flight.error is not None:
                raise flight.error  # the same call on the same state fails the same way
            assert flight.output is not None
            return flight.output
        try:
            flight.output = output = self._execute(chain, env, args, gas)
            with self._cache_lock:
                # On the pending block, a state change since we looked makes the answer unfit
                # to share.
                if not moving or generation == self._generation:
                    if len(self._call_cache) >= CALL_CACHE_SIZE:
                        self._call_cache.clear()
                    self._call_cache[key] = output
            return output
        except Exception as exc:
            flight.error = exc
            raise
        finally:
            with self._cache_lock:
                self._flights.pop(flight_key, None)
            flight.done.set()

    def _execute(self, chain: Any, env: BlockHeaderAPI, args: TxArgs, gas: int) -> bytes:
        vm = chain.get_vm(env.copy(base_fee_per_gas=0))
        state = vm.state
        tx = call_transaction(vm.get_transaction_builder(), self.chain_id, state, args, gas)
        return run_call(state, tx, timeout=self.call_limits.timeout)

    def estimate_gas(self, args: TxArgs, tag: BlockTag = "pending") -> int:
        """The least gas limit with which the transaction succeeds (eth_estimateGas).

        The search stays under the block gas limit, the given gas and `call_limits.gas_cap`,
        and under `call_limits.timeout` seconds in all.
        """
        limits = self.call_limits
        with self.lock:
            state = self._call_state(tag)
            cap = min(args.gas or state.gas_limit, state.gas_limit, limits.gas_cap)
            tx = self._call_transaction(state, args, cap)
            return estimate_gas(state, tx, cap, timeout=limits.timeout)

    def _call_state(self, tag: BlockTag) -> StateAPI:
        """State after block `tag`, executing in the environment of the block that follows it.

        That is what anvil does: a call at "latest" sees the next block's number and the
        (time-shifted) current time, so a view agrees with a transaction sent right after.
        The base fee is zero so that calls without a gas price are free.
        """
        return self._chain.get_vm(self._call_env(tag).copy(base_fee_per_gas=0)).state

    def _call_env(self, tag: BlockTag) -> BlockHeaderAPI:
        """The header a call at `tag` executes in: the pending block's own header when it
        holds transactions, else a fresh child of the block `tag` names."""
        if tag == "pending" and self._pending_open and self._pending:
            return self._chain.header
        parent = self._header_for("latest" if tag == "pending" else tag)
        following = self._canonical_header(parent.block_number + 1)
        if following is not None:
            return self._chain.create_header_from_parent(
                parent, timestamp=following.timestamp, mix_hash=_prevrandao(parent.hash)
            )
        return self._child_header(self._chain, parent)

    def _child_header(
        self, chain: Any, head: BlockHeaderAPI, timestamp: int | None = None
    ) -> BlockHeaderAPI:
        """The header of a block mined on `head` now, or at `timestamp` (reads no chain
        database)."""
        if timestamp is None:
            timestamp = self._fresh_timestamp(head)
        return chain.create_header_from_parent(
            head, timestamp=timestamp, mix_hash=_prevrandao(head.hash)
        )

    def _call_transaction(self, state: StateAPI, args: TxArgs, gas: int) -> SpoofTransaction:
        builder = self._chain.get_vm().get_transaction_builder()
        return call_transaction(builder, self.chain_id, state, args, gas)

    # ------------------------------------------------------------------ transactions and mining

    def send_raw_transaction(self, raw: bytes, *, allow_unprotected: bool = True) -> bytes:
        """Validate and apply a signed transaction; mine it in automine mode. Returns its hash.

        With `allow_unprotected` false, a pre-EIP-155 transaction (one without a chain id, so
        valid on every chain) is refused, as geth refuses it over RPC.
        """
        with self._mutating():
            tx = self._decode(raw)
            if not allow_unprotected and _transaction_chain_id(tx) is None:
                raise TransactionRejectedError(
                    "only replay-protected (EIP-155) transactions allowed over RPC "
                    "(start the chain with --allow-unprotected-txs to accept this one)"
                )
            self._ensure_open()
            self._apply(tx)
            self._emit({"op": "tx", "raw": to_data(raw), "hash": to_data(tx.hash)})
            if self.automine:
                self._mine_one()
            return tx.hash

    def mine(
        self, blocks: int = 1, *, timestamp: int | None = None, interval: int | None = None
    ) -> list[BlockAPI]:
        """Seal the pending block (and `blocks - 1` empty ones after it)."""
        if not 1 <= blocks <= MAX_MINE_BLOCKS:
            message = f"can mine 1 to {MAX_MINE_BLOCKS} blocks at once, not {blocks}"
            raise InvalidParamsError(message)
        with self._mutating():
            mined = [self._mine_one(timestamp)]
            for _ in range(blocks - 1):
                next_ts = None if interval is None else mined[-1].header.timestamp + interval
                mined.append(self._mine_one(next_ts))
            return mined

    def set_automine(self, enabled: bool) -> None:
        """Switch automine; switching it on mines what is pending right away."""
        with self._mutating():
            self.automine = enabled
            if enabled and self._pending:
                self._mine_one()

    def increase_time(self, seconds: int) -> int:
        """Shift the clock of future blocks forward; returns the total shift."""
        with self._mutating():
            self._time_offset += seconds
            self._emit_clock()
            if self._pending_open and self._pending:
                self._open_fresh()
            return self._time_offset

    def set_next_block_timestamp(self, timestamp: int) -> None:
        """Give the next block this timestamp; later blocks continue from it."""
        with self._mutating():
            head = self._head()
            if timestamp <= head.timestamp:
                raise InvalidParamsError(
                    f"timestamp {timestamp} is not after the latest block's {head.timestamp}"
                )
            self._next_timestamp = timestamp
            self._emit_clock()
            if self._pending_open and self._pending:
                self._open_fresh()

    def snapshot(self) -> int:
        """Remember the latest block; `revert(id)` returns to it."""
        with self._mutating():
            return self._take_snapshot()

    def revert(self, snapshot_id: int) -> bool:
        """Return to a snapshot, dropping later blocks, pending transactions and snapshots."""
        with self._mutating():
            return self._revert(snapshot_id)

    def _take_snapshot(self) -> int:
        self._snapshot_counter += 1
        self._snapshots[self._snapshot_counter] = self._head().hash
        self._emit({"op": "snapshot", "id": self._snapshot_counter})
        return self._snapshot_counter

    def _revert(self, snapshot_id: int) -> bool:
        target = self._snapshots.get(snapshot_id)
        if target is None:
            return False
        self._backend.revert_to_snapshot(target)
        for later in [key for key in self._snapshots if key >= snapshot_id]:
            del self._snapshots[later]
        self._pending = []
        self._pending_open = False
        self._emit({"op": "revert", "id": snapshot_id})
        return True

    def _decode(self, raw: bytes) -> SignedTransactionAPI:
        if not raw:
            raise TransactionRejectedError("empty raw transaction")
        if raw[0] == _BLOB_TX_TYPE:
            raise TransactionRejectedError("blob transactions (type 3) are not supported")
        builder = self._chain.get_vm().get_transaction_builder()
        try:
            tx = builder.decode(raw)
            tx.validate()
            tx.check_signature_validity()
        except Exception as exc:  # decoding untrusted bytes: any failure means bad input
            raise TransactionRejectedError(f"invalid raw transaction: {exc}") from exc
        tx_chain_id = _transaction_chain_id(tx)
        if tx_chain_id is not None and tx_chain_id != self.chain_id:
            raise TransactionRejectedError(
                f"invalid chain id {tx_chain_id} for this chain (chain id {self.chain_id})"
            )
        return tx

    def _apply(self, tx: SignedTransactionAPI) -> None:
        try:
            self._chain.apply_transaction(tx)
        except EthValidationError as exc:
            raise TransactionRejectedError(str(exc)) from exc
        self._pending.append(tx)

    def _fresh_timestamp(self, head: BlockHeaderAPI | None = None) -> int:
        """The wall clock's second (plus the time-travel offset): blocks may share a second
        (`genesis._same_second_blocks`), so block time follows the wall clock however many
        transactions arrive, and never goes backwards."""
        head_ts = (head or self._head()).timestamp
        if self._next_timestamp is not None:
            return max(self._next_timestamp, head_ts)
        return max(head_ts, int(self._clock()) + self._time_offset)

    def _ensure_open(self) -> None:
        # An empty pending block is re-opened so that its timestamp is the time of use.
        if not self._pending_open or not self._pending:
            self._open_fresh()

    def _open_fresh(self) -> None:
        consumed_next = self._next_timestamp is not None
        timestamp = self._fresh_timestamp()
        self._open_pending(timestamp)
        if consumed_next:
            self._continue_clock_from(timestamp)

    def _continue_clock_from(self, timestamp: int) -> None:
        self._time_offset = timestamp - int(self._clock())
        self._emit_clock()

    def _open_pending(self, timestamp: int) -> None:
        """Start the pending block afresh at `timestamp`, re-applying its transactions."""
        head = self._head()
        if timestamp < head.timestamp:
            raise InvalidParamsError(
                f"block timestamp {timestamp} is before the latest block's {head.timestamp}"
            )
        chain = self._chain
        chain.header = chain.create_header_from_parent(
            head, timestamp=timestamp, mix_hash=_prevrandao(head.hash)
        )
        self._pending_open = True
        self._next_timestamp = None
        self._emit({"op": "open", "ts": timestamp})
        carried, self._pending = self._pending, []
        for tx in carried:
            try:
                self._apply(tx)
            except TransactionRejectedError as exc:
                _log.warning("dropped pending transaction %s: %s", to_data(tx.hash), exc)

    def _mine_one(self, timestamp: int | None = None) -> BlockAPI:
        if timestamp is None:
            self._ensure_open()
        elif not (self._pending_open and self._chain.header.timestamp == timestamp):
            self._open_pending(timestamp)
            self._continue_clock_from(timestamp)
        block = self._seal()
        self._emit(
            {
                "op": "mine",
                "number": block.number,
                "hash": to_data(block.hash),
                "ts": block.header.timestamp,
            }
        )
        return block

    def _seal(self) -> BlockAPI:
        block = self._chain.mine_block()
        self._pending = []
        self._pending_open = False
        if self._block_listeners:
            self._unannounced.append(block)
        return block

    def _emit_clock(self) -> None:
        self._emit({"op": "clock", "offset": self._time_offset, "next_ts": self._next_timestamp})


class _Flight:
    """One eth_call being run; requests for the same call on the same state wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.output: bytes | None = None
        self.error: Exception | None = None


def _prevrandao(parent_hash: bytes) -> bytes:
    """A deterministic stand-in for the beacon chain's randomness, so replay is exact."""
    return keccak(b"flchain-devnet-prevrandao" + parent_hash)


def _transaction_chain_id(tx: SignedTransactionAPI) -> int | None:
    if isinstance(tx, TypedTransaction):
        return tx.chain_id
    v = tx.v
    return (v - 35) // 2 if v >= 35 else None  # v of 27/28: pre-EIP-155, valid on any chain


def _genesis_from_record(record: dict[str, Any], path: Path) -> GenesisConfig:
    if record.get("op") != "genesis":
        raise JournalError(f"{path}: the first record is not the genesis record")
    if record.get("version") != JOURNAL_VERSION:
        raise JournalError(
            f"{path}: journal version {record.get('version')!r} is not {JOURNAL_VERSION}"
        )
    try:
        return GenesisConfig.from_json(record.get("config"))
    except (TypeError, ValueError) as exc:
        raise JournalError(f"{path}: bad genesis record: {exc}") from exc


def _check_match(
    stored: GenesisConfig, wanted: GenesisConfig | None, names: Collection[str]
) -> None:
    if wanted is None:
        return
    for name in names:
        have, want = getattr(stored, name), getattr(wanted, name)
        if have != want:
            raise JournalError(
                f"the state directory holds a chain with {name}={have!r}, not {want!r}; "
                "use another directory or drop the option"
            )


def _as_int(value: Any, *, signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and not signed):
        raise JournalError(f"expected an integer, got {value!r}")
    return value


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise JournalError(f"expected 0x-hex, got {value!r}")
    return bytes.fromhex(value[2:])
