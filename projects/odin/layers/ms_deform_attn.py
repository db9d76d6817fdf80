"""Deprecated alias of :mod:`projects.odin.layers.deform_attn_layer`.

The deformable-attention layer was renamed so that it is not confused with the kernel of
:mod:`projects.odin.ops.ms_deform_attn`; importing this path warns once.
"""
from projects.odin.utils.deprecation import alias_module

__deprecated_alias__ = True
alias_module(__name__, 'projects.odin.layers.deform_attn_layer')
