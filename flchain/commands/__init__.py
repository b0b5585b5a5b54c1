"""The command-line interface, and nothing else: one module per command group.

`flchain.cli` is the root group and loads these modules on demand. Library packages
(`flchain.node`, `flchain.devnet`, `flchain.contracts`, ...) hold no CLI code; the modules here
parse options (shared groups in `options`), call the libraries and present the result
(`output` for tables, JSON and CSV; `access` for reaching a chain and signing).
"""
