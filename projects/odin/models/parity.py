"""Deprecated alias of :mod:`projects.odin.parity`.

The parity check is tooling, not model code: it moved out of the model package; importing this
path warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.parity')
