"""Sources beyond plain iterables: polling for what is new, with checkpointed positions."""

from ._poll import poll

__all__ = ["poll"]
