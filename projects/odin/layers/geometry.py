"""Deprecated alias of :mod:`projects.odin.structures.geometry`.

Pure geometry functions (no layers) moved to :mod:`projects.odin.structures`; importing this path
warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.structures.geometry')
