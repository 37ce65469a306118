"""The public names of flowgraph's pytest plugin, for code that imports them.

The plugin itself is the top-level module ``_flowgraph_pytestplugin``, which
pytest loads by itself (entry point ``flowgraph``) without importing
flowgraph; importing this module imports flowgraph, so it is not the plugin.
"""

from __future__ import annotations

from _flowgraph_pytestplugin import DEFAULT_FAULT_PROBABILITIES as DEFAULT_FAULT_PROBABILITIES
from _flowgraph_pytestplugin import default_fault_plan as default_fault_plan

__all__ = ["DEFAULT_FAULT_PROBABILITIES", "default_fault_plan"]
