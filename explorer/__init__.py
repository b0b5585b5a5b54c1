"""A read-only web explorer of the FLChain ledger (`flchain ledger serve`).

`model` turns the ledger (`flchain.contracts.ledger`, members named by
`flchain.contracts.names`) into JSON-ready views, reading the chain at most once per block
however many browsers ask; `server` serves them as a JSON API and a static page (plain HTML,
one JS file, CSS: no build step, no CDN) and pushes each new block to the page over
server-sent events. Nothing here signs or sends a transaction.
"""

from __future__ import annotations

from flchain.explorer.model import ExplorerSource, LedgerViews
from flchain.explorer.server import ExplorerServer, ServerLimits

__all__ = ["ExplorerServer", "ExplorerSource", "LedgerViews", "ServerLimits"]
