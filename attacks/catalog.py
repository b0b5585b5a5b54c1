"""The names of every attack, what kind each is, and the one-line help the CLI shows."""

from __future__ import annotations

from flchain.attacks.errors import AttackError

UPDATE_ATTACKS: tuple[str, ...] = ("signflip", "scale", "gaussian", "zero", "alie", "ipm")
DATA_ATTACKS: tuple[str, ...] = ("labelflip", "backdoor")
PROTOCOL_ATTACKS: tuple[str, ...] = (
    "equivocate",
    "withhold",
    "badvote",
    "spam",
    "liesamples",
    "copy",
    "replay",
    "slowloris",
    "blobflood",
    "deepjson",
    "freeride",
    "falsealarm",
    "novote",
)
SECURE_ATTACKS: tuple[str, ...] = ("ringshift",)
ATTACKS: tuple[str, ...] = UPDATE_ATTACKS + DATA_ATTACKS + PROTOCOL_ATTACKS + SECURE_ATTACKS

DESCRIPTIONS: dict[str, str] = {
    "signflip": "send -factor x the honest update (factor=4)",
    "scale": "send factor x the honest update (factor=50)",
    "gaussian": "send N(0, sigma^2) noise instead of an update (sigma=1)",
    "zero": "send an all-zero update (free rider)",
    "alie": "A Little Is Enough (Baruch et al. 2019): benign mean - z x std per coordinate (z; "
    "the paper's z for n, f by default); on a devnet the colluders estimate mean and std from "
    "their own honestly trained updates over their collusion channel (omniscient test mode: "
    "from the honest updates)",
    "ipm": "inner-product manipulation (Xie et al. 2019): -epsilon x benign mean (epsilon=0.5); "
    "on a devnet the colluders estimate the mean from their own honestly trained updates "
    "(omniscient test mode: from the honest updates)",
    "labelflip": "train on flipped labels y -> C-1-y (fraction=1)",
    "backdoor": "stamp a bright corner trigger on a fraction of samples, relabelled to target "
    "(fraction=0.5, target=0, size=2, value=1)",
    "equivocate": "announce different updates/votes to different peers in the same round",
    "withhold": "commit an update digest on chain but never serve its blob",
    "badvote": "vote for a wrong global-model digest and accepted-updates bitmap",
    "spam": "flood the gossip topics with invalid and oversized messages",
    "liesamples": "train honestly but claim 2**64-1 training samples in every commit",
    "copy": "free-ride: train nothing, commit another member's digest of the round as its own "
    "(honest nodes serve an update only after the submit phase, so the blob cannot be copied)",
    "replay": "recommit an old update digest (its own or another member's) with its old base round",
    "slowloris": "open blob requests to every member and never read the answers, or ask once "
    "on a blob session and leave it idle, holding their serve slots (bounded per round)",
    "blobflood": "announce junk update digests on gossip that are never committed; serve junk "
    "bytes for them",
    "deepjson": "send nested-bracket JSON (75 KB, 1 MB, 8 MB) to the chain RPC and on gossip; "
    "in secure mode commit a bundle with a nested header",
    "freeride": "never train nor commit an update, but vote with the honest aggregate every "
    "round, hoping to be paid",
    "falsealarm": "raise a Siren alarm on every finalized round within its alarm window, "
    "whatever the model (griefing; bonds its reputation each time)",
    "novote": "train and commit honestly but never vote (a blocking minority)",
    "ringshift": "secure mode only: encrypt any value of the masking ring instead of the "
    "quantized update, aiming the decrypted mean at target x the range's half-width on every "
    "coordinate (target=0.9), shifting it by shift x the half-width (shift=S), or aiming it at "
    "norm N against its own update, inside the aggregate bound (oppose=N)",
}

_WHERE = {
    "update": "an update attack: use flchain.attacks.apply() on the trained update",
    "data": "a data attack: use flchain.attacks.poison_dataset() on the node's training data",
    "protocol": "a protocol attack: the network node (flchain.node) carries it out",
    "secure": "a secure-mode attack: a member of a secure round carries it out on its quantized "
    "levels (flchain.attacks.ringshift), in `simulate --secure` and on a secure devnet",
}


def is_update_attack(name: str) -> bool:
    """True for attacks that replace the update a peer sends."""
    return name in UPDATE_ATTACKS


def always_alarms(name: str | None) -> bool:
    """True for attackers that raise a Siren alarm on every round they can judge: the update
    attacks. Siren's reference (AISIGSJTU/Siren, `malicious_agent.py`) sets every malicious
    client's alarm each round, so that the server's check runs and the alarmers' side can be
    swayed; the simulation and the node both ask here."""
    return name is not None and is_update_attack(name)


def is_data_attack(name: str) -> bool:
    """True for attacks that poison a peer's training data before it trains."""
    return name in DATA_ATTACKS


def is_protocol_attack(name: str) -> bool:
    """True for attacks on the network protocol rather than on the model."""
    return name in PROTOCOL_ATTACKS


def is_secure_attack(name: str) -> bool:
    """True for attacks on the ring arithmetic of secure aggregation (secure mode only)."""
    return name in SECURE_ATTACKS


def kind_of(name: str) -> str:
    """'update', 'data', 'protocol' or 'secure'; AttackError naming the known ones otherwise."""
    if not isinstance(name, str):
        raise AttackError(f"attack name must be a string, got {name!r}")
    if is_update_attack(name):
        return "update"
    if is_data_attack(name):
        return "data"
    if is_protocol_attack(name):
        return "protocol"
    if is_secure_attack(name):
        return "secure"
    raise AttackError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}")


def require_kind(name: str, wanted: str) -> None:
    """Raise AttackError saying where `name` applies when it is not a `wanted` attack."""
    kind = kind_of(name)
    if kind != wanted:
        article = "an" if wanted == "update" else "a"
        raise AttackError(f"attack {name!r} is not {article} {wanted} attack; it is {_WHERE[kind]}")
