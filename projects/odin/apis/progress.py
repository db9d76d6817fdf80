"""Deprecated alias of :mod:`projects.odin.demo.progress`.

The module moved there; importing this path warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.demo.progress')
