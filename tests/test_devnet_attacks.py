"""The protocol attacks on a real devnet: the Byzantine node achieves nothing.

Two devnets, three attackers each (one attack per node, all of them otherwise honest voters),
so that six attacks cost two networks: the commit attacks (`copy`, `replay`, `liesamples`)
under FedAvg with a sample cap, and the network attacks (`slowloris`, `blobflood`,
`deepjson`). Each test asserts its own attack's outcome: honest nodes finish every round on
one digest, the refusal is on chain (the ledger) or in the honest nodes' /metrics, and the
attacker's own `protocol_attack_actions_total` shows that it really tried.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as st_load
from test_devnet_e2e import FLCHAIN, _client, _honest, _wait

from flchain.attacks.payloads import JUNK_MARKER, LIE_SAMPLES
from flchain.commands.devnet import ledger_summary
from flchain.contracts import FLChainClient, TaskStatus
from flchain.devnet.launcher import down, node_status, read_manifest
from flchain.models import build_model, flatten_params, load_dataset, model_from_bytes
from flchain.node.blobstore import BlobStore
from flchain.node.protocol_attacks import ACTIONS_METRIC, SLOWLORIS_STREAMS

pytestmark = pytest.mark.slow
ROUNDS = 2  # round 1 gives replay something old; round 2 tries every attack again
MAX_SAMPLES = 100  # below every honest shard of six, so every honest update weighs the cap


@dataclass
class Devnet:
    """A finished devnet: its directory, the ledger summary, and facts read from its chain
    before it was stopped."""

    directory: Path
    summary: dict[str, Any]
    commits: dict[tuple[int, int], Any]  # (round, member) -> UpdateCommit, committed only
    weights: dict[int, list[int]]  # round -> consensus weight per member index
    initial_digest: bytes
    ledger: dict[int, dict[int, dict[str, Any]]]  # `ledger round N --json`: round -> member
    seconds: float

    def index(self, attack: str) -> int:
        (node,) = [n for n in self.summary["nodes"] if n["attack"] == attack]
        return node["member_index"]

    def node(self, attack: str) -> dict[str, Any]:
        (node,) = [n for n in self.summary["nodes"] if n["attack"] == attack]
        return node

    def honest_indices(self) -> list[int]:
        return [n["member_index"] for n in _honest(self.summary)]

    def honest_metric(self, name: str, label: str) -> float:
        """A labelled counter summed over the honest nodes."""
        return sum(n["metrics"].get(name, {}).get(label, 0) for n in _honest(self.summary))


def _run_devnet(directory: Path, *args: str, ledger: bool = False, timeout: float = 420) -> Devnet:
    """`flchain devnet up --detach`, wait for the task to finish and every node to stop,
    read the ledger (with `ledger`, also `flchain ledger round N --json` of every round) and
    the commitments, then `devnet down`."""
    t0 = time.perf_counter()
    result = subprocess.run(
        [*FLCHAIN, "devnet", "up", "--dir", str(directory), "--detach", "--json", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        manifest = read_manifest(directory)
        client, task_id = _client(manifest), manifest["task_id"]
        _wait(
            lambda: client.get_task(task_id).status in (TaskStatus.FINISHED, TaskStatus.CLOSED),
            timeout,
            "the task to end",
        )
        _wait(
            lambda: all((node_status(n) or {}).get("phase") == "done" for n in manifest["nodes"]),
            60,
            "every node to adopt the final model",
        )
        summary = ledger_summary(manifest)
        commits, weights = _read_commits(client, task_id, summary)
        initial = client.get_task(task_id).initial_digest
        rounds = (
            {r["round"]: _ledger_round(directory, r["round"]) for r in summary["rounds"]}
            if ledger
            else {}
        )
    finally:
        down(directory)
    return Devnet(directory, summary, commits, weights, initial, rounds, time.perf_counter() - t0)


def _read_commits(
    client: FLChainClient, task_id: int, summary: dict[str, Any]
) -> tuple[dict[tuple[int, int], Any], dict[int, list[int]]]:
    commits, weights = {}, {}
    for r in summary["rounds"]:
        for i in r["submitted"]:
            commits[(r["round"], i)] = client.get_update(task_id, r["round"], i)
        weights[r["round"]] = client.consensus_weights(task_id, r["round"])
    return commits, weights


def _ledger_round(directory: Path, number: int) -> dict[int, dict[str, Any]]:
    """Each member's row of `flchain ledger round N --json --devnet DIR`, by member index."""
    result = subprocess.run(
        [*FLCHAIN, "ledger", "round", str(number), "--json", "--devnet", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {m["member"]: m for m in json.loads(result.stdout)["members"]}


def _agreed(devnet: Devnet) -> None:
    """What every attack test needs first: all rounds finalized, honest nodes on one model."""
    summary = devnet.summary
    assert summary["status"] == "finished"
    assert [r["status"] for r in summary["rounds"]] == ["finalized"] * ROUNDS
    honest = _honest(summary)
    assert len(honest) == 3
    assert all(n["global_digest"] == summary["final_digest"] for n in honest)
    for r in summary["rounds"]:
        assert set(devnet.honest_indices()) <= set(r["accepted"]), r


def _actions(devnet: Devnet, attack: str) -> dict[str, float]:
    return devnet.node(attack)["metrics"].get(ACTIONS_METRIC.name, {})


# ---------------------------------------------------------------- commit attacks


@pytest.fixture(scope="module")
def commit_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    devnet = _run_devnet(
        tmp_path_factory.mktemp("commit-attacks"),
        *("--nodes", "6", "--rounds", str(ROUNDS), "--byzantine", "3"),
        *("--attack", "copy", "--attack", "replay", "--attack", "liesamples"),
        *("--rule", "fedavg", "--model", "mlp", "--local-epochs", "1"),
        # copy and replay commit nothing that counts, so every submit phase runs its window
        # out: 6 s is enough for an MLP's one epoch on six nodes (they commit within a second
        # or two of the round's start on a loaded machine)
        *("--submit-window", "6", "--vote-window", "20", "--max-samples", str(MAX_SAMPLES)),
        ledger=True,
    )
    print(f"\ncommit-attack devnet: {devnet.seconds:.0f} s")
    yield devnet


def test_copy_commits_nothing_and_falls_behind_the_honest_members(commit_devnet: Devnet) -> None:
    _agreed(commit_devnet)
    copier = commit_devnet.index("copy")
    for r in commit_devnet.summary["rounds"]:
        assert copier not in r["submitted"], f"round {r['round']}: the copied digest was taken"
        row = commit_devnet.ledger[r["round"]][copier]
        assert row["submitted"] is False and row["digest"] is None
    # It tried every round and the contract said no ("digest taken"); the node carried on.
    assert _actions(commit_devnet, "copy").get("copy,refused", 0) == ROUNDS
    assert commit_devnet.node("copy")["global_digest"] == commit_devnet.summary["final_digest"]
    reputations = commit_devnet.summary["reputations"]
    assert all(reputations[copier] < reputations[i] for i in commit_devnet.honest_indices())


def test_replay_of_an_old_digest_is_refused(commit_devnet: Devnet) -> None:
    _agreed(commit_devnet)
    replayer = commit_devnet.index("replay")
    rounds = commit_devnet.summary["rounds"]
    assert replayer in rounds[0]["submitted"]  # round 1: nothing old yet, it trains
    for r in rounds[1:]:
        assert replayer not in r["submitted"], f"round {r['round']}: the replay was taken"
        assert commit_devnet.ledger[r["round"]][replayer]["submitted"] is False
    # Every digest on chain is a different one: no replayed (or copied) commitment landed.
    digests = [c.digest for c in commit_devnet.commits.values()]
    assert len(set(digests)) == len(digests)
    assert _actions(commit_devnet, "replay").get("replay,refused", 0) == ROUNDS - 1
    reputations = commit_devnet.summary["reputations"]
    assert all(reputations[replayer] < reputations[i] for i in commit_devnet.honest_indices())


def _flat_model(blob: bytes, model: torch.nn.Module) -> torch.Tensor:
    model_from_bytes(blob, model)
    return flatten_params(model).to(torch.float64)


def _flat_update(blob: bytes) -> torch.Tensor:
    (tensor,) = st_load(blob).values()
    return tensor.to(torch.float64)


def _blob(devnet: Devnet, digest: bytes) -> bytes | None:
    for node_dir in sorted(devnet.directory.glob("node-*")):
        data = BlobStore(node_dir).get(digest)
        if data is not None:
            return data
    return None


def test_liesamples_moves_the_model_no_more_than_an_honest_member(
    commit_devnet: Devnet,
) -> None:
    _agreed(commit_devnet)
    liar = commit_devnet.index("liesamples")
    honest = commit_devnet.honest_indices()
    for r in commit_devnet.summary["rounds"]:
        number = r["round"]
        row = commit_devnet.ledger[number][liar]
        assert int(row["samples"]) == LIE_SAMPLES  # the ledger shows the lie
        assert liar in r["accepted"]  # it trained honestly: FedAvg keeps it
        # The chain caps its claim: it weighs no more than any honest member.
        weights = commit_devnet.weights[number]
        assert weights[liar] <= min(weights[i] for i in honest), (number, weights)
    # And the agreed models say the same: solve global - base = sum_i share_i x update_i for
    # the shares each accepted update actually got.
    dataset = load_dataset("digits")
    model = build_model("mlp", dataset.input_shape, dataset.num_classes)
    checked = 0
    base_digest = commit_devnet.initial_digest
    for r in commit_devnet.summary["rounds"]:
        global_digest = bytes.fromhex(r["global_digest"][2:])
        accepted = r["accepted"]
        blobs = [
            _blob(commit_devnet, commit_devnet.commits[(r["round"], i)].digest) for i in accepted
        ]
        base, new = _blob(commit_devnet, base_digest), _blob(commit_devnet, global_digest)
        base_digest = global_digest
        if base is None or new is None or any(b is None for b in blobs):
            continue  # pruned by the retention policy: another round shows it
        step = _flat_model(new, model) - _flat_model(base, model)
        updates = torch.stack([_flat_update(b) for b in blobs], dim=1)  # type: ignore[arg-type]
        shares = torch.linalg.lstsq(updates, step.unsqueeze(1)).solution.squeeze(1)
        share = dict(zip(accepted, shares.tolist(), strict=True))
        assert share[liar] <= max(share[i] for i in honest) + 0.01, (r["round"], share)
        checked += 1
    assert checked >= 1, "no round's blobs were left to measure the model's step"


# ---------------------------------------------------------------- network attacks


@pytest.fixture(scope="module")
def network_devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    devnet = _run_devnet(
        tmp_path_factory.mktemp("network-attacks"),
        *("--nodes", "6", "--rounds", str(ROUNDS), "--byzantine", "3"),
        *("--attack", "slowloris", "--attack", "blobflood", "--attack", "deepjson"),
        *("--rule", "fedavg", "--model", "mlp", "--local-epochs", "1"),
        *("--submit-window", "20", "--vote-window", "20"),
        *("--keep-rounds", "1"),  # so retention runs within the test's two rounds
    )
    print(f"\nnetwork-attack devnet: {devnet.seconds:.0f} s")
    yield devnet


def _every_update_accepted(devnet: Devnet) -> None:
    """The network attackers train honestly: each round holds all six updates."""
    for r in devnet.summary["rounds"]:
        assert r["submitted"] == r["accepted"] == list(range(6)), r


def test_slowloris_gets_only_its_share_of_serve_slots(network_devnet: Devnet) -> None:
    _agreed(network_devnet)
    _every_update_accepted(network_devnet)
    opened = _actions(network_devnet, "slowloris").get("slowloris,opened", 0)
    assert opened >= SLOWLORIS_STREAMS  # it did hold requests open at its victims
    # Honest servers refused its extra streams per peer instead of running out of slots.
    assert network_devnet.honest_metric("blob_failures_total", "peer_slots") >= 1
    for node in _honest(network_devnet.summary):
        assert node["metrics"]["updates_missing_total"] == 0


def _junk_in(node_dir: Path) -> int:
    store = BlobStore(node_dir)
    return sum(
        1 for digest in store.digests() if (store.get(digest) or b"").startswith(JUNK_MARKER)
    )


def test_blobflood_junk_is_never_fetched_or_stored(network_devnet: Devnet) -> None:
    _agreed(network_devnet)
    _every_update_accepted(network_devnet)
    announced = _actions(network_devnet, "blobflood").get("blobflood,announced", 0)
    assert announced >= 1
    dropped = sum(
        network_devnet.honest_metric("announcements_dropped_total", reason)
        for reason in ("uncommitted", "quarantine_full")
    )
    assert dropped >= 1
    for node in _honest(network_devnet.summary):
        node_dir = network_devnet.directory / node["name"]
        assert _junk_in(node_dir) == 0, f"{node['name']} stored junk blobs"
        # --keep-rounds 1: round 1's updates were deleted once round 2 was final; the
        # finalized global models stay.
        assert node["metrics"]["blobs_pruned_total"] >= 1
        final = bytes.fromhex(network_devnet.summary["final_digest"].removeprefix("0x"))
        assert BlobStore(node_dir).has(final)


def test_deepjson_is_refused_by_the_chain_and_by_gossip(network_devnet: Devnet) -> None:
    _agreed(network_devnet)
    _every_update_accepted(network_devnet)
    actions = _actions(network_devnet, "deepjson")
    # 75 KB, 1 MB and 8 MB nested bodies each round: the chain answered each with an error
    # and kept serving (the task finished); none went unanswered.
    assert actions.get("deepjson,rpc_refused", 0) == 3 * ROUNDS, actions
    assert actions.get("deepjson,rpc_no_answer", 0) == 0
    assert actions.get("deepjson,gossip_published", 0) >= 1
    assert network_devnet.honest_metric("messages_rejected_total", "too_deep") >= 1
