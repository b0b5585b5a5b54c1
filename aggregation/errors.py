"""The one exception type of `flchain.aggregation`."""

from __future__ import annotations


class AggregationError(ValueError):
    """Aggregation input or parameters are invalid.

    A ValueError so callers that already guard against bad values catch it; the message
    always says which argument was wrong and why, because a rule that guessed would
    silently hand back a wrong global model.
    """
