"""Log queries (eth_getLogs) and polling filters (eth_newFilter, eth_getFilterChanges, ...).

Filters live in memory only: like any node, a restarted server has forgotten them and answers
"filter not found", which clients treat as a cue to create a new one.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_bloom import BloomFilter

from flchain.devnet.chain import DevChain
from flchain.devnet.encoding import (
    BlockHashRef,
    BlockTag,
    parse_address,
    parse_block_tag,
    parse_hash,
    to_data,
)
from flchain.devnet.errors import InvalidParamsError, ResourceNotFoundError
from flchain.devnet.serializers import block_log_records, log_to_json

FILTER_TIMEOUT_S = 300.0
MAX_FILTERS = 10_000
MAX_TOPICS = 4

TopicSet = frozenset[bytes] | None


@dataclass(frozen=True)
class LogQuery:
    """Which logs to return: a block range or one block hash, addresses and topic positions."""

    from_block: BlockTag = "latest"
    to_block: BlockTag = "latest"
    block_hash: bytes | None = None
    addresses: frozenset[bytes] = frozenset()
    topics: tuple[TopicSet, ...] = ()

    def matches(self, address: bytes, topics: tuple[bytes, ...]) -> bool:
        """Whether one log satisfies the address and topic criteria."""
        if self.addresses and address not in self.addresses:
            return False
        if len(topics) < len(self.topics):
            return False
        pairs = zip(self.topics, topics, strict=False)
        return all(want is None or have in want for want, have in pairs)

    def may_match_bloom(self, bloom: int) -> bool:
        """Cheap pre-check on a block's bloom filter before reading its receipts."""
        block_bloom = BloomFilter(bloom)
        if self.addresses and not any(a in block_bloom for a in self.addresses):
            return False
        return all(
            want is None or any(topic in block_bloom for topic in want) for want in self.topics
        )


def parse_log_query(obj: Any, name: str = "filter") -> LogQuery:
    """Decode a filter object of eth_getLogs / eth_newFilter."""
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise InvalidParamsError(f"{name}: expected a filter object")
    block_hash = obj.get("blockHash")
    if block_hash is not None and (
        obj.get("fromBlock") is not None or obj.get("toBlock") is not None
    ):
        raise InvalidParamsError(f"{name}: blockHash excludes fromBlock and toBlock")
    return LogQuery(
        from_block=parse_block_tag(obj.get("fromBlock"), f"{name}.fromBlock"),
        to_block=parse_block_tag(obj.get("toBlock"), f"{name}.toBlock"),
        block_hash=None if block_hash is None else parse_hash(block_hash, f"{name}.blockHash"),
        addresses=_parse_addresses(obj.get("address"), name),
        topics=_parse_topics(obj.get("topics"), name),
    )


def _parse_addresses(value: Any, name: str) -> frozenset[bytes]:
    if value is None:
        return frozenset()
    items = value if isinstance(value, list) else [value]
    return frozenset(parse_address(item, f"{name}.address") for item in items)


def _parse_topics(value: Any, name: str) -> tuple[TopicSet, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_TOPICS:
        raise InvalidParamsError(f"{name}.topics: expected a list of at most {MAX_TOPICS} entries")
    parsed: list[TopicSet] = []
    for position, entry in enumerate(value):
        where = f"{name}.topics[{position}]"
        if entry is None:
            parsed.append(None)
        elif isinstance(entry, list):
            # An empty alternative list is a wildcard, as in geth.
            parsed.append(frozenset(parse_hash(t, where) for t in entry) or None)
        else:
            parsed.append(frozenset({parse_hash(entry, where)}))
    while parsed and parsed[-1] is None:
        parsed.pop()
    return tuple(parsed)


def get_logs(chain: DevChain, query: LogQuery, *, first: int | None = None) -> list[dict[str, Any]]:
    """Logs of canonical blocks that match; `first` overrides the start (for filter polls)."""
    with chain.lock:
        if query.block_hash is not None:
            block = chain.get_block_by_hash(query.block_hash)
            if block is None:
                raise ResourceNotFoundError(f"block {to_data(query.block_hash)} not found")
            return block_logs(chain, block, query)
        head = chain.block_number
        start = _bound(chain, query.from_block, head) if first is None else first
        end = min(_bound(chain, query.to_block, head), head)
        explicit = isinstance(query.from_block, int) and isinstance(query.to_block, int)
        if first is None and explicit and start > query.to_block:
            message = f"invalid block range: fromBlock {start} is after toBlock {end}"
            raise InvalidParamsError(message)
        logs: list[dict[str, Any]] = []
        for number in range(start, end + 1):
            block = chain.get_block(number)
            if block is not None and query.may_match_bloom(block.header.bloom):
                logs.extend(block_logs(chain, block, query))
        return logs


def _bound(chain: DevChain, tag: BlockTag, head: int) -> int:
    if tag == "pending":
        return head
    if isinstance(tag, int):
        return tag
    if isinstance(tag, BlockHashRef):
        raise InvalidParamsError("fromBlock/toBlock must be numbers or tags; use blockHash instead")
    return chain.resolve_block_number(tag)


def block_logs(chain: DevChain, block: Any, query: LogQuery) -> list[dict[str, Any]]:
    """The logs of one block that match `query`'s addresses and topics (its block range is
    not consulted): eth_getLogs per block, and the `logs` subscription of the WebSocket."""
    receipts = chain.get_receipts(block)
    return [
        log_to_json(record, block)
        for record in block_log_records(block, receipts)
        if query.matches(record.address, record.topics)
    ]


@dataclass
class _Filter:
    kind: str  # "logs" or "blocks"
    query: LogQuery | None
    next_block: int
    last_poll: float


class FilterRegistry:
    """Installed polling filters, keyed by the quantity-encoded id handed to the client."""

    def __init__(self, chain: DevChain, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._chain = chain
        self._clock = clock
        self._filters: dict[str, _Filter] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def new_log_filter(self, query: LogQuery) -> str:
        return self._install("logs", query)

    def new_block_filter(self) -> str:
        return self._install("blocks", None)

    def _install(self, kind: str, query: LogQuery | None) -> str:
        with self._lock:
            self._expire()
            if len(self._filters) >= MAX_FILTERS:
                raise ResourceNotFoundError(f"too many filters installed (limit {MAX_FILTERS})")
            filter_id = hex(next(self._ids))
            next_block = self._chain.block_number + 1
            self._filters[filter_id] = _Filter(kind, query, next_block, self._clock())
            return filter_id

    def uninstall(self, filter_id: str) -> bool:
        with self._lock:
            return self._filters.pop(filter_id, None) is not None

    def changes(self, filter_id: str) -> list[Any]:
        """What happened since the last poll: new block hashes or new matching logs."""
        with self._chain.lock, self._lock:
            entry = self._get(filter_id)
            head = self._chain.block_number
            start = min(entry.next_block, head + 1)  # a revert may have moved the head back
            entry.next_block = head + 1
            query = entry.query
            if query is None:
                blocks = (self._chain.get_block(n) for n in range(start, head + 1))
                return [to_data(block.hash) for block in blocks if block is not None]
            if query.block_hash is not None:
                return []
            if isinstance(query.from_block, int):
                start = max(start, query.from_block)
            return get_logs(self._chain, query, first=start)

    def logs(self, filter_id: str) -> list[dict[str, Any]]:
        """All logs matching a log filter's query (eth_getFilterLogs)."""
        with self._lock:
            entry = self._get(filter_id)
            if entry.kind != "logs" or entry.query is None:
                raise InvalidParamsError(f"filter {filter_id} is not a log filter")
            query = entry.query
        return get_logs(self._chain, query)

    def _get(self, filter_id: str) -> _Filter:
        entry = self._filters.get(filter_id)
        if entry is None:
            raise ResourceNotFoundError("filter not found")
        entry.last_poll = self._clock()
        return entry

    def _expire(self) -> None:
        cutoff = self._clock() - FILTER_TIMEOUT_S
        for filter_id in [k for k, v in self._filters.items() if v.last_poll < cutoff]:
            del self._filters[filter_id]
