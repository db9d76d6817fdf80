"""Deprecated alias of :mod:`projects.odin.parity.cross_view_reference`.

The official-formulation cross-view block is a reference of the benchmarks and tests, not a model
building block: it moved out of the model package; importing this path warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.parity.cross_view_reference')
