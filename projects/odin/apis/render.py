"""Deprecated alias of :mod:`projects.odin.visualization.render` and the demo's figure.

Point rendering moved to the former, the demo's figure to :mod:`projects.odin.demo.figure`;
importing this path warns once.
"""
from projects.odin.demo.figure import render_demo_figure
from projects.odin.utils.deprecation import warn_moved
from projects.odin.visualization.render import (
    default_view,
    look_at_view,
    read_instance_ply,
    render_points,
)

__deprecated_alias__ = True
warn_moved(__name__, 'projects.odin.visualization.render and projects.odin.demo.figure')

__all__ = ['render_points', 'default_view', 'look_at_view', 'read_instance_ply',
           'render_demo_figure']
