"""The command line answers --help and usage errors without importing torch, web3 or libp2p
(each costs about a second): the command modules import them when a command does work, and
the packages they read names from load their modules on first use (`flchain._lazy`)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import pytest

LAZY_PACKAGES = ("flchain.aggregation", "flchain.attacks", "flchain.models", "flchain.contracts")
HEAVY = ("torch", "web3", "libp2p", "eth_account", "trio_websocket")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_export_is_the_name_its_module_defines(package: str) -> None:
    module = importlib.import_module(package)
    exports: dict[str, str] = module._EXPORTS
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    # An export named like a submodule would be shadowed by that module once it is imported.
    assert not set(exports) & submodules
    assert set(exports) == set(module.__all__)
    for name, where in exports.items():
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), name
        assert value is getattr(importlib.import_module(where), name)


def test_commands_and_catalogs_import_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "import flchain.cli\n"
        "for name in ('simulate', 'devnet', 'chain', 'node', 'contract', 'task', 'ledger', "
        "'bench'):\n"
        "    __import__('flchain.commands.' + name)\n"
        "from flchain.aggregation import RULES, f_bounds_text\n"
        "from flchain.attacks import ATTACKS\n"
        "from flchain.models import MODEL_NAMES, PARTITION_SCHEMES\n"
        "from flchain.contracts.types import MAX_MEMBERS\n"
        "import flchain.contracts.views\n"  # `devnet status` reads the chain without web3
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_reading_a_task_configs_privacy_imports_no_torch() -> None:
    """`ledger rounds --devnet` reads the task config for its privacy columns: torch (a
    second of the command's time) is for building models and checking rule parameters."""
    probe = (
        "import sys, json\n"
        "from flchain.contracts.ledger import load_task_privacy\n"
        "from flchain.contracts.types import TaskInfo\n"
        "import hashlib, dataclasses\n"
        "data = json.dumps({'rule': 'multikrum', 'rule_params': {'f': 1}, 'dp_noise': 0.5,"
        " 'dp_clip': 1.0, 'dp_delta': 1e-5}).encode()\n"
        "fields = {f.name: None for f in dataclasses.fields(TaskInfo)}\n"
        "digest = hashlib.sha256(data).digest()\n"
        "task = TaskInfo(**{**fields, 'task_id': 1, 'config_digest': digest})\n"
        "p = load_task_privacy(data, task, 'cfg')\n"
        "print(p.dp_noise, p.dp_clip, p.dp_delta, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["0.5", "1.0", "1e-05", "False"], result.stdout
