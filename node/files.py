"""The files a running node writes into its directory for others to read: where its status
endpoint is (`runtime.json`) and its last word once stopped (`status.json`). Named once here:
the daemon writes them; `node status`, `devnet status` and the explorer read them."""

from __future__ import annotations

RUNTIME_FILE = "runtime.json"
STATUS_FILE = "status.json"
