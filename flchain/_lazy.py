"""Package namespaces that import their modules on first use.

`flchain.aggregation`, `flchain.attacks`, `flchain.models` and `flchain.contracts` re-export
names from their modules, some of which import torch or web3 (a second each). The command
line reads only names and facts from light modules (`aggregation.catalog`,
`attacks.catalog`, `models.catalog`, `contracts.types`), so these packages load a module only
when one of its names is used (PEP 562): `flchain --help` answers without torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose name N lives in module `exports[N]`."""

    def module_getattr(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return module_getattr, module_dir
