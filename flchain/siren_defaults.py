"""Siren's defaults (Guo et al., SoCC 2021), the one place they are defined.

The values are the reference code's (AISIGSJTU/Siren, `global_vars.py` arguments in brackets).
`flchain.aggregation.siren` implements the rule with them; the simulation config, the node
(learner, engine, daemon) and the CLIs read them from here. Torch-free, so the configs can
import it without loading torch.
"""

from __future__ import annotations

CLIENT_THRESHOLD = 0.04  # C_l [--client_c]: a client alarms when local > global + C_l * local
SERVER_THRESHOLD = 0.1  # C_s [--server_c]: an update is suspicious below best - C_s * best
PROHIBIT_FRACTION = 0.45  # [--server_prohibit]: blacklisted after int(0.45 * T) penalty points
FORGIVE = 0.5  # [--forgive]: points taken off for every accepted update
PENALTY = 1.0  # one point per rejected update (the reference's `prohibit[i] += 1`)
VALIDATION_FRACTION = 0.1  # share of a client's data held out for its alarms (`agents.py`)
DEFAULT_ROUNDS = 40  # [--T]: only when the caller does not say how many rounds the task has
