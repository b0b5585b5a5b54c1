"""How the Byzantine nodes of one devnet collude: a shared directory, bounded waits.

ALIE (Baruch et al. 2019) and IPM (Xie et al. 2019) craft their update from the statistics
of the benign updates. A lone node knows only its own update, so on its own ALIE's std is 0
and it sends its honest update. As in the ALIE paper, the colluders instead estimate the
benign mean and std from their own honestly trained updates: each Byzantine node trains
honestly, drops its update into the channel, waits (bounded) for the other colluders' and
crafts the attack from their mean and std. The `omniscient` test mode also has the honest
nodes drop their honest update there before they commit, and the colluders then craft from
those (the worst case, the benign updates the simulation hands its attackers; if none
arrives in time they fall back to their own estimate).

The channel is a directory the devnet launcher creates (`create_channel`), readable by the
nodes it names; `channel.json` says how many colluders there are and whether the mode is
omniscient. Updates are safetensors files (never pickles) under `colluders/r<round>/` and
`honest/r<round>/`, written atomically, read only up to the update's size and checked
(one finite float32 vector of the model's size). Every wait ends by its deadline; a
colluder that hears from nobody crafts from what it has (its own update). Files of rounds
older than two are deleted by their writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from flchain import safe_json
from flchain.aggregation import canonical_order
from flchain.attacks.collusion import alie_z
from flchain.attacks.context import AttackContext, AttackError
from flchain.attacks.registry import apply

if TYPE_CHECKING:
    from flchain.pipeline import AttackHook

log = logging.getLogger("flchain.attacks.channel")

COLLUDING_ATTACKS: tuple[str, ...] = ("alie", "ipm")
"""The update attacks that craft from the benign statistics, hence collude."""

CHANNEL_FILE = "channel.json"
COLLUSION_WAIT = 30.0
"""The most a colluder waits for the others' updates in one round, in seconds."""
POLL = 0.1
_KEY = "update"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_SPEC_BYTES = 4096
_MAX_COLLUDERS = 1024


class ChannelError(ValueError):
    """A channel directory or spec that cannot be used."""


@dataclass(frozen=True)
class ChannelSpec:
    """What `channel.json` says: how many colluders, whether honest nodes leak (test mode)."""

    colluders: int
    omniscient: bool = False
    wait: float = COLLUSION_WAIT

    def __post_init__(self) -> None:
        if isinstance(self.colluders, bool) or not isinstance(self.colluders, int):
            raise ChannelError(f"colluders must be an int, got {self.colluders!r}")
        if not 1 <= self.colluders <= _MAX_COLLUDERS:
            raise ChannelError(f"colluders must be in 1..{_MAX_COLLUDERS}, got {self.colluders}")
        if not isinstance(self.omniscient, bool):
            raise ChannelError(f"omniscient must be a bool, got {self.omniscient!r}")
        if isinstance(self.wait, bool) or not isinstance(self.wait, int | float):
            raise ChannelError(f"wait must be a number of seconds, got {self.wait!r}")
        if not (math.isfinite(self.wait) and 0 < self.wait <= 600):
            raise ChannelError(f"wait must be in (0, 600] seconds, got {self.wait}")


def create_channel(
    directory: Path, colluders: int, *, omniscient: bool = False, wait: float = COLLUSION_WAIT
) -> Path:
    """Create (or reset) a channel directory for `colluders` Byzantine nodes; returns it."""
    spec = ChannelSpec(colluders, omniscient, wait)
    directory = Path(directory)
    for sub in ("colluders", "honest"):
        shutil.rmtree(directory / sub, ignore_errors=True)
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / CHANNEL_FILE).write_text(json.dumps(dataclasses.asdict(spec)) + "\n")
    return directory


def read_spec(directory: Path) -> ChannelSpec:
    """The channel's spec, checked; ChannelError when it is missing or malformed."""
    path = Path(directory) / CHANNEL_FILE
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise ChannelError(f"no collusion channel at {directory}: {exc}") from exc
    if len(raw) > _MAX_SPEC_BYTES:
        raise ChannelError(f"{path} is larger than {_MAX_SPEC_BYTES} bytes")
    try:
        data = safe_json.loads(raw, max_bytes=_MAX_SPEC_BYTES, max_depth=2)
    except ValueError as exc:
        raise ChannelError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"colluders", "omniscient", "wait"}:
        raise ChannelError(f"{path} must hold colluders, omniscient and wait only")
    try:
        return ChannelSpec(**data)
    except TypeError as exc:
        raise ChannelError(f"{path}: {exc}") from exc


class CollusionChannel:
    """One node's end of the channel: `name` (e.g. its peer id) tags its files."""

    def __init__(self, directory: Path, name: str, num_params: int) -> None:
        if not _NAME.match(name):
            raise ChannelError(f"channel name {name!r} must match {_NAME.pattern}")
        if num_params < 1:
            raise ChannelError(f"num_params must be >= 1, got {num_params}")
        self.directory = Path(directory)
        self.spec = read_spec(self.directory)
        self.name = name
        self.num_params = num_params
        self._max_bytes = 4 * num_params + 1024

    def share(self, round_: int, update: Tensor, *, honest: bool = False) -> None:
        """Drop our honest update of `round_` into the channel (`honest`: as an honest node
        in omniscient mode, else as a colluder)."""
        folder = self._folder(round_, honest)
        folder.mkdir(parents=True, exist_ok=True)
        vector = update.detach().to("cpu", torch.float32).reshape(-1).contiguous()
        if vector.numel() != self.num_params:
            raise ChannelError(f"update of {vector.numel()} values, expected {self.num_params}")
        tmp = folder / f".{self.name}.tmp"
        tmp.write_bytes(st_save({_KEY: vector}))
        os.replace(tmp, folder / f"{self.name}.safetensors")
        self._prune(round_, honest)

    def gather(
        self, round_: int, deadline: float, *, honest: bool = False, want: int
    ) -> tuple[list[str], Tensor]:
        """The writers' names (sorted) and their updates in the round's colluder (or
        `honest`) folder as a `[k, d]` matrix, once `want` are there or at `deadline`
        (time.time()), whichever comes first; invalid files are skipped. May be empty."""
        folder = self._folder(round_, honest)
        while True:
            found = self._read(folder)
            if len(found) >= want or time.time() >= deadline:
                break
            time.sleep(POLL)
        names = sorted(found)
        if not names:
            return names, torch.empty((0, self.num_params))
        return names, torch.stack([found[k] for k in names])

    def _folder(self, round_: int, honest: bool) -> Path:
        return self.directory / ("honest" if honest else "colluders") / f"r{int(round_)}"

    def _read(self, folder: Path) -> dict[str, Tensor]:
        found: dict[str, Tensor] = {}
        try:
            entries = sorted(folder.iterdir())[: 4 * _MAX_COLLUDERS]
        except OSError:
            return found
        for path in entries:
            if path.suffix != ".safetensors" or not _NAME.match(path.stem):
                continue
            try:
                if path.stat().st_size > self._max_bytes:
                    continue
                tensors = st_load(path.read_bytes())
            except Exception:  # being replaced, unreadable, not safetensors: skip it
                continue
            vector = tensors.get(_KEY)
            if (
                set(tensors) != {_KEY}
                or vector is None
                or vector.dtype != torch.float32
                or tuple(vector.shape) != (self.num_params,)
                or not bool(torch.isfinite(vector).all())
            ):
                continue
            found[path.stem] = vector
        return found

    def _prune(self, round_: int, honest: bool) -> None:
        """Delete our own files of rounds before round_ - 2."""
        parent = self.directory / ("honest" if honest else "colluders")
        for folder in parent.glob("r*"):
            try:
                old = int(folder.name[1:]) < round_ - 2
            except ValueError:
                continue
            if old:
                (folder / f"{self.name}.safetensors").unlink(missing_ok=True)


class _Trainer(Protocol):
    def train(
        self,
        global_blob: bytes,
        round_: int,
        *,
        attack: AttackHook | None = None,
        local_noise: bool = True,
    ) -> Any: ...

    def decode_update(self, blob: bytes) -> Tensor: ...

    def encode_update(self, update: Tensor) -> bytes: ...


class ColludingTrainer:
    """A node's learner as a colluder (or, in omniscient mode, a leaking honest node) sees it.

    Wraps the node's `Learner` (built without the update attack) and delegates everything
    to it except `train`, which runs the learner's pipeline (`flchain.pipeline`: train ->
    attack -> clip -> noise) with the channel as its attack hook: the honestly trained update
    (before clipping and noise, the stage at which the simulation's attackers see the honest
    updates) is shared over the channel and, for a colluder, replaced by `attack` crafted
    from the colluders' estimate (`AttackContext` with num_clients = the task's members,
    num_byzantine = the colluders); the crafted update is then clipped and noised like any
    other. `members` and `deadline` are callables the engine's state answers: the task's
    member count and the latest time (time.time()) by which the crafted update must be
    ready.
    """

    def __init__(
        self,
        learner: _Trainer,
        channel: CollusionChannel,
        *,
        attack: str | None,
        params: dict[str, float] | None = None,
    ) -> None:
        if attack is not None and attack not in COLLUDING_ATTACKS:
            raise AttackError(f"attack {attack!r} does not collude ({COLLUDING_ATTACKS})")
        self._learner = learner
        self.channel = channel
        self.attack = attack
        self.params = dict(params or {})
        self.members: Any = lambda: channel.spec.colluders + 1
        self.deadline: Any = lambda: time.time() + channel.spec.wait
        self.last_context: AttackContext | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._learner, name)

    def train(self, global_blob: bytes, round_: int, *, local_noise: bool = True) -> Any:
        """The learner's pipeline with `hook(round_)` as its attack step."""
        return self._learner.train(
            global_blob, round_, attack=self.hook(round_), local_noise=local_noise
        )

    def hook(self, round_: int) -> AttackHook:
        """The pipeline's attack step of `round_`: leak (an honest node of an omniscient
        run) or craft from the channel (a colluder); otherwise the update passes as is."""

        def step(own: Tensor | None, generator: torch.Generator) -> Tensor:
            if own is None:
                raise AttackError("a colluder shares its trained update: it must train")
            if self.attack is not None:
                return self.craft(own, round_, generator)
            if self.channel.spec.omniscient:
                self.channel.share(round_, own, honest=True)
            return own

        return step

    def craft(self, honest: Tensor, round_: int, generator: torch.Generator) -> Tensor:
        """Share `honest`, gather the estimate, and return the attack's update (the attack's
        random draws come from `generator`, the pipeline's attack stream)."""
        spec = self.channel.spec
        self.channel.share(round_, honest)
        deadline = min(float(self.deadline()), time.time() + spec.wait)
        _, estimate = self.channel.gather(round_, deadline, want=spec.colluders)
        if spec.omniscient:
            # The worst case the simulation models: every honest update of the round, so the
            # wait for them runs to the commit deadline, not the colluders' bounded wait.
            n_honest = max(1, int(self.members()) - spec.colluders)
            _, benign = self.channel.gather(
                round_, float(self.deadline()), honest=True, want=n_honest
            )
            if len(benign):
                estimate = benign
        if not len(estimate):  # our own file vanished: our update is all we know
            estimate = honest.unsqueeze(0)
        # Content order (the files are named by peer id, a random order): the statistics'
        # float sums then match the simulation's, which orders the same way.
        estimate = estimate[canonical_order(list(estimate))]
        n = max(int(self.members()), spec.colluders)
        context = AttackContext(
            honest_updates=estimate.to(honest.dtype),
            num_clients=n,
            num_byzantine=spec.colluders,
            generator=generator,
            params=self.params,
        )
        self.last_context = context
        assert self.attack is not None
        if self.attack == "alie" and "z" not in self.params:
            try:
                alie_z(n, spec.colluders)
            except AttackError as exc:  # no z for this n and f: say so, send the honest one
                log.warning("round %d: %s; sending the honest update", round_, exc)
                return honest
        log.info(
            "round %d: %s crafted from %d update(s) (n=%d, f=%d)",
            round_,
            self.attack,
            len(estimate),
            n,
            spec.colluders,
        )
        # the pipeline makes it distinct per sender and round (`pipeline.distinct`)
        return apply(self.attack, honest, context)
