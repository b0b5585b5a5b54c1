"""The distribution installs as users install it: a built wheel in a fresh venv imports and runs."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = (
    "aggregation",
    "attacks",
    "contracts",
    "crypto",
    "devnet",
    "explorer",
    "models",
    "node",
)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel and install it (no deps) into a new venv that borrows our dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        check=True,
    )
    (wheel,) = dist.glob("flchain-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # torch & co. come from the test venv; a plain path line does not run its .pth files, so
    # the editable install of flchain there stays invisible and the wheel is what imports.
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    return env_dir


def test_wheel_maps_top_level_folders_into_flchain(wheel_venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, flchain, importlib\n"
        f"mods = {{n: importlib.import_module('flchain.' + n).__file__ for n in {SUBPACKAGES!r}}}\n"
        "from importlib.resources import files\n"
        "static = sorted(p.name for p in files('flchain.explorer').joinpath('static').iterdir())\n"
        "print(json.dumps({'root': flchain.__file__, 'mods': mods, 'v': flchain.__version__,"
        " 'static': static}))\n"
    )
    out = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    info = json.loads(out)
    assert info["root"].startswith(str(wheel_venv))
    for name, path in info["mods"].items():
        assert path.startswith(str(wheel_venv)), name
        assert f"/flchain/{name}/" in path
    assert info["v"] == "0.1.0"
    # The explorer's page ships as package data.
    assert info["static"] == ["app.js", "favicon.svg", "index.html", "style.css"]
    # Nothing generic such as a top-level `models` or `crypto` is installed.
    site = Path(info["root"]).parents[1]
    assert not any((site / name).exists() for name in SUBPACKAGES)


def test_wheel_console_script_runs_a_simulation(wheel_venv: Path, tmp_path: Path) -> None:
    exe = wheel_venv / "bin" / "flchain"
    help_text = subprocess.run(
        [str(exe), "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "simulate" in help_text
    out = subprocess.run(
        [str(exe), "simulate", "--nodes", "3", "--rounds", "1", "--model", "logreg", "--json"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    result = json.loads(out)
    assert len(result["rounds"]) == 1
    assert 0.0 <= result["final_accuracy"] <= 1.0
