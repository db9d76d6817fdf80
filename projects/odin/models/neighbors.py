"""Deprecated alias of :mod:`projects.odin.structures.neighbors`.

The model's k-NN and IDW entry points moved with the multi-view geometry that uses them; this
path is the same module object (substituting ``knn`` through it still reaches the model) and
importing it warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.structures.neighbors')
