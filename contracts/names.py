"""Names people can read for task members: `#3 node-2 0x1234…abcd (byzantine: signflip)`.

A member index says nothing on its own: indices follow join order, so member 3 of a devnet
may well be node-2. Every table that names members (`flchain ledger ...`, the `devnet up`
summary, `devnet status`) asks one `MemberNames` here. With a devnet it knows each node's
name and, for the Byzantine ones, their attack (from devnet.json); without one, a member is
its index and short address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def short_address(address: str | None) -> str:
    """0x1234…abcd: enough to tell members apart and find them in the full listing."""
    if not address:
        return "-"
    if address.startswith(("0x", "0X")) and len(address) > 12:
        return f"{address[:6]}…{address[-4:]}"
    return address


@dataclass(frozen=True)
class NodeName:
    """What a devnet knows about the node behind an account."""

    name: str
    attack: str | None = None  # set for the devnet's Byzantine nodes


@dataclass(frozen=True)
class MemberNames:
    """Labels for the members of one task: index -> account from the chain, account -> node
    from the devnet (when there is one)."""

    nodes: Mapping[str, NodeName] = field(default_factory=dict)  # by lower-case address
    accounts: Mapping[int, str] = field(default_factory=dict)  # member index -> address

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | None) -> MemberNames:
        """The node names and attacks a devnet.json records (none for None)."""
        nodes: dict[str, NodeName] = {}
        for node in (manifest or {}).get("nodes", []):
            address = node.get("address")
            if isinstance(address, str):
                nodes[address.lower()] = NodeName(str(node.get("name")), node.get("attack"))
        return cls(nodes)

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> MemberNames:
        """Names back from rows of {index, account, node, attack} (a devnet summary's
        "members"), so a summary prints the same labels it was built with."""
        nodes: dict[str, NodeName] = {}
        accounts: dict[int, str] = {}
        for row in rows:
            accounts[int(row["index"])] = str(row["account"])
            if row.get("node"):
                nodes[str(row["account"]).lower()] = NodeName(str(row["node"]), row.get("attack"))
        return cls(nodes, accounts)

    def with_accounts(self, accounts: Mapping[int, str] | Iterable[str]) -> MemberNames:
        """These names, for a task whose members (index -> account) are `accounts`."""
        if not isinstance(accounts, Mapping):
            accounts = dict(enumerate(accounts))
        return MemberNames(self.nodes, dict(accounts))

    @property
    def knows_nodes(self) -> bool:
        """Whether a devnet named any node (the JSON rows then carry node and attack)."""
        return bool(self.nodes)

    def node(self, index: int | None = None, account: str | None = None) -> NodeName | None:
        """The devnet node behind a member (by index or account), if the devnet knows it."""
        account = account or (None if index is None else self.accounts.get(index))
        return None if account is None else self.nodes.get(account.lower())

    def byzantine(self) -> list[int]:
        """Indices of the members the devnet made Byzantine."""
        return sorted(i for i in self.accounts if (n := self.node(i)) is not None and n.attack)

    def label(self, index: int | None, account: str | None = None, *, stacked: bool = False) -> str:
        """`#3 node-2 0x1234…abcd (byzantine: signflip)`; `#3 0x1234…abcd` without a
        devnet; a node that has not joined is `node-2 0x1234…abcd`. `stacked` puts the
        address and the mark on lines of their own, for narrow columns of wide tables."""
        account = account or (None if index is None else self.accounts.get(index))
        node = self.node(index, account)
        name = " ".join(([] if index is None else [f"#{index}"]) + ([node.name] if node else []))
        lines = [name] if name else []
        if account:
            lines.append(short_address(account))
        text = ("\n" if stacked else " ").join(lines or ["-"])
        mark = _mark(node)
        return text + ("\n" + mark.lstrip() if stacked and mark else mark)

    def brief(self, index: int, *, mark: bool = True) -> str:
        """`#3 node-2 (byzantine: signflip)` for lists of members; `#3` without a devnet.
        `mark=False` drops the Byzantine mark where the column already says it."""
        node = self.node(index)
        name = "" if node is None else f" {node.name}"
        return f"#{index}{name}" + (_mark(node) if mark else "")

    def briefs(self, indices: Iterable[int] | None, *, mark: bool = True) -> str:
        """A list of members, comma-separated; "none" for an empty one."""
        if indices is None:
            return "-"
        return ", ".join(self.brief(i, mark=mark) for i in indices) or "none"

    def fields(self, index: int | None, account: str | None = None) -> dict[str, Any]:
        """JSON/CSV fields naming a member's node: {"node", "attack"} (None when unknown)."""
        node = self.node(index, account)
        if node is None:
            return {"node": None, "attack": None}
        return {"node": node.name, "attack": node.attack}


def _mark(node: NodeName | None) -> str:
    return f" (byzantine: {node.attack})" if node is not None and node.attack else ""
