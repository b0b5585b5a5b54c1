"""The ledger explorer in a real browser: headless Chromium, driven by selenium.

One small devnet (4 nodes, 3 rounds; the Byzantine node free-rides: it commits nothing, so
every round waits out the 6 s submit window and the page can watch rounds finalize). While
it runs, `flchain ledger serve --devnet DIR` serves it and the page must show the rounds and
members the ledger commands report (node names, the Byzantine mark), follow each new round
over server-sent events without a reload, and log no console error. Then the devnet stops:
the running explorer switches to its chain journal, and a fresh `ledger serve` on the
stopped devnet shows the same page.

`make test` installs Chromium and chromedriver (`make browser`: Debian packages) and
selenium (the test extra). Nothing here reaches the network: the page loads no CDN.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flchain.commands.devnet import devnet
from flchain.commands.ledger import ledger
from flchain.contracts.names import short_address

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium: pip install -e '.[test]'")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

FLCHAIN = [sys.executable, "-m", "flchain.cli"]
ROUNDS = 3
WAIT_S = 180.0
ENDED = ("finalized", "failed", "reverted", "aborted")  # a round that will not change


def _binary(name: str, env: str) -> str:
    """Chromium or its driver: $FLCHAIN_CHROMIUM / $FLCHAIN_CHROMEDRIVER, else on PATH."""
    found = os.environ.get(env) or shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} not found: run `make browser` (Debian packages chromium chromium-driver)"
        )
    return found


@dataclass
class Explorer:
    """A `flchain ledger serve` process and the URL it printed."""

    proc: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls, directory: Path) -> Explorer:
        proc = subprocess.Popen(
            [*FLCHAIN, "ledger", "serve", "--devnet", str(directory), "--port", "0", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=10)
            raise AssertionError(
                f"ledger serve failed: {proc.stderr.read() if proc.stderr else ''}"
            )
        return cls(proc, json.loads(line)["url"])

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@dataclass
class Net:
    directory: Path
    explorer: Explorer
    live: dict[str, Any] = field(default_factory=dict)  # what the page showed while it ran


def _flchain(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FLCHAIN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _ledger(*args: str) -> Any:
    """`flchain ledger ... --json`, in this process (no interpreter start-up to wait for)."""
    result = CliRunner().invoke(ledger, [*args, "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.stdout)


def _down(directory: Path) -> None:
    result = CliRunner().invoke(devnet, ["down", "--dir", str(directory)])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "FLCHAIN_CHROMIUM")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(_binary("chromedriver", "FLCHAIN_CHROMEDRIVER"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Net]:
    directory = tmp_path_factory.mktemp("explorer") / "dn"
    args = ["--nodes", "4", "--rounds", str(ROUNDS), "--byzantine", "1", "--attack", "freeride"]
    args += ["--model", "mlp", "--submit-window", "6", "--vote-window", "30"]
    result = _flchain("devnet", "up", "--dir", str(directory), *args, "--detach", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"explorer: flchain ledger serve --devnet {directory}" in result.stderr
    explorer = None
    try:
        explorer = Explorer.start(directory)
        yield Net(directory, explorer)
    finally:
        _down(directory)
        if explorer is not None:
            explorer.stop()


def _wait(driver: Any, predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """The predicate's first truthy value. The page re-renders as blocks arrive, so an
    element found a moment ago may be gone when read: that read is simply tried again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StaleElementReferenceException:
            value = None
        if value:
            return value
        time.sleep(0.25)
    shown = driver.execute_script("return document.body.innerText")
    raise AssertionError(f"timed out waiting for {what}; the page shows:\n{shown[:4000]}")


def _texts(driver: Any, css: str) -> list[str]:
    """The text of each element `css` selects, as the user sees it."""
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def _page(driver: Any) -> dict[str, Any]:
    """What the rounds page shows: each round's status and counts, each matrix row."""
    return driver.execute_script(
        """
        const rows = [...document.querySelectorAll('#rounds tbody tr')].map((tr) => ({
          round: Number(tr.dataset.round), status: tr.dataset.status,
          cells: [...tr.children].map((td) => td.textContent.trim()) }));
        const matrix = [...document.querySelectorAll('#matrix tbody tr')].map((tr) => ({
          member: Number(tr.dataset.member), label: tr.children[0].textContent.trim(),
          byz: tr.children[0].querySelector('.byz') !== null,
          states: [...tr.querySelectorAll('td.cell')].map((td) => td.dataset.state) }));
        return { rows, matrix, renders: Number(document.body.dataset.renders),
                 block: Number(document.body.dataset.block || 0),
                 badge: document.getElementById('badge').textContent,
                 same: window.__sameDocument === true };
        """
    )


def _showing(driver: Any, statuses: list[str]) -> dict[str, Any] | None:
    """The page, once its rounds have these statuses."""
    page = _page(driver)
    return page if [r["status"] for r in page["rows"]] == statuses else None


# Chromium fails its requests in flight with this when an interface of its network namespace
# changes: the netns liveness test (tests/test_liveness_netns.py) adds a bridge and veth links
# and takes one down and up again, and under `pytest -n 2` it may run beside these tests. The
# page asks again at the next block; the error is the host's, not the page's.
_HOST_NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


def _errors(driver: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and _HOST_NETWORK_CHANGED not in e["message"]
    ]


def _expected_labels(members: list[dict[str, Any]]) -> dict[int, str]:
    labels = {}
    for m in members:
        label = f"#{m['index']} {m['node']} {short_address(m['account'])}"
        labels[m["index"]] = label + (f" (byzantine: {m['attack']})" if m["attack"] else "")
    return labels


@pytest.mark.slow
def test_live_page_follows_the_rounds_of_a_running_devnet(net: Net, browser: Any) -> None:
    browser.get(net.explorer.url)
    _wait(browser, lambda: "#/tasks/1" in browser.current_url, "the redirect to task 1")
    _wait(browser, lambda: _page(browser)["renders"] >= 1, "the first render")
    browser.execute_script("window.__sameDocument = true")
    first = _page(browser)
    assert first["badge"].startswith("live")
    # The task ends while the page stays put: each new block comes over the stream.
    _wait(
        browser,
        lambda: net.explorer.api("/api/tasks/1")["task"]["status"] in ("finished", "closed"),
        "the task to end",
    )
    dn = str(net.directory)
    rounds = _ledger("rounds", "--devnet", dn)
    members = _ledger("members", "--devnet", dn)
    statuses = [r["status"] for r in rounds]
    assert len(statuses) == ROUNDS and "open" not in statuses and "voting" not in statuses
    done = _wait(browser, lambda: _showing(browser, statuses), "the page to show the ended rounds")
    ended_at_load = sum(r["status"] in ENDED for r in first["rows"])
    assert ended_at_load < ROUNDS, "the devnet finished before the page loaded"
    assert done["same"] and done["renders"] > first["renders"] and done["block"] > first["block"]
    # The page shows what the ledger commands report.
    for row, rnd in zip(done["rows"], rounds, strict=True):
        assert row["cells"][3] == f"{rnd['committed']}/{rnd['eligible']}"
        assert row["cells"][4] == ("-" if rnd["accepted"] is None else str(rnd["accepted"]))
    labels = _expected_labels(members)
    assert {m["member"]: m["label"] for m in done["matrix"]} == labels
    (bad,) = [m for m in members if m["attack"]]
    assert bad["attack"] == "freeride"
    byz_rows = [m for m in done["matrix"] if m["byz"]]
    assert [m["member"] for m in byz_rows] == [bad["index"]]
    assert byz_rows[0]["states"] == ["missed"] * ROUNDS  # a free rider commits nothing
    net.live = {"page": done, "labels": labels, "rounds": rounds}
    # The other views render from the same API, with the same names.
    browser.get(net.explorer.url + "#/tasks/1/members")
    texts = _wait(browser, lambda: _texts(browser, "#members tbody tr"), "members")
    assert len(texts) == len(members)
    for m, text in zip(members, texts, strict=True):
        assert text.startswith(f"#{m['index']} {m['node']}") and m["account"] in text
    assert "(byzantine: freeride)" in texts[bad["index"]]
    browser.get(net.explorer.url + "#/tasks/1/charts")
    _wait(browser, lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-loss polyline"), "charts")
    _wait(
        browser,
        lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-accuracy circle"),
        "the nodes' accuracy",
        timeout=30,
    )
    browser.get(net.explorer.url + "#/tasks/1/verify")
    statuses = set(
        _wait(
            browser,
            lambda: [
                e.get_attribute("data-status")
                for e in browser.find_elements(By.CSS_SELECTOR, "#verify tbody tr")
            ],
            "verify",
        )
    )
    assert "mismatch" not in statuses and "ok" in statuses
    browser.get(net.explorer.url + "#/tasks/1/events?name=VoteCast")
    names = _wait(browser, lambda: _texts(browser, "#events tbody td:nth-child(3)"), "events")
    assert set(names) == {"VoteCast"}
    assert _errors(browser) == []


@pytest.mark.slow
def test_the_page_of_a_stopped_devnet_shows_the_same_ledger(net: Net, browser: Any) -> None:
    assert net.live, "needs the live test first"
    _down(net.directory)
    # The explorer that watched it run now reads the journal the chain left.
    _wait(
        browser,
        lambda: net.explorer.api("/api/info")["live"] is False,
        "the running explorer to switch to the journal",
        timeout=30,
    )
    browser.get("about:blank")
    browser.get_log("browser")  # the old page's stream ended with its server's chain: not ours
    stopped = Explorer.start(net.directory)
    try:
        browser.get(stopped.url + "#/tasks/1")
        page = _wait(browser, lambda: (p := _page(browser))["rows"] and p, "the stopped page")
        assert "stopped devnet (journal)" in page["badge"]
        assert [r["status"] for r in page["rows"]] == [r["status"] for r in net.live["rounds"]]
        final = _ledger("rounds", "--devnet", str(net.directory))  # the journal, too
        for row, rnd in zip(page["rows"], final, strict=True):
            cells = row["cells"]
            accepted = "-" if rnd["accepted"] is None else str(rnd["accepted"])
            assert cells[3:5] == [f"{rnd['committed']}/{rnd['eligible']}", accepted]
            assert cells[6] == f"{rnd['votes']}/{rnd['eligible']}"
        assert {m["member"]: m["label"] for m in page["matrix"]} == net.live["labels"]
        assert page["matrix"] == net.live["page"]["matrix"]
        browser.get(stopped.url + "#/tasks/1/charts")
        _wait(
            browser,
            lambda: browser.find_elements(By.CSS_SELECTOR, "#chart-accuracy circle"),
            "accuracy from status.json",
        )
        assert _errors(browser) == []
    finally:
        stopped.stop()
