"""flchain.aggregation: FedAvg and Byzantine-robust aggregation rules as pure tensor functions.

The registry and entry point is `registry` (`aggregate`, `check_params`, ...); the rules' names
and facts are in `catalog`, importable without torch. Names load on first use.
"""

from flchain._lazy import lazy_exports

_EXPORTS = {
    "AggregateResult": "flchain.aggregation.result",
    "AggregationError": "flchain.aggregation.errors",
    "F_RULES": "flchain.aggregation.catalog",
    "NETWORK_RULES": "flchain.aggregation.catalog",
    "PUBLIC_DATA_RULES": "flchain.aggregation.catalog",
    "RULES": "flchain.aggregation.catalog",
    "RuleSpec": "flchain.aggregation.base",
    "SECURE_RULES": "flchain.aggregation.catalog",
    "SIDE_INPUTS": "flchain.aggregation._validation",
    "WEIGHTED_RULES": "flchain.aggregation.catalog",
    "aggregate": "flchain.aggregation.registry",
    "canonical_order": "flchain.aggregation.registry",
    "check_params": "flchain.aggregation.registry",
    "f_bounds_text": "flchain.aggregation.catalog",
    "finite_rows": "flchain.aggregation._validation",
    "fit_params": "flchain.aggregation.registry",
    "max_f": "flchain.aggregation.registry",
    "optional_inputs": "flchain.aggregation.registry",
    "required_inputs": "flchain.aggregation.registry",
    "rule_parameters": "flchain.aggregation.registry",
    "rule_spec": "flchain.aggregation.registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
