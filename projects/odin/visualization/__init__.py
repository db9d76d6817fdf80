"""Drawing and writing ODIN's instances: palettes, overlays, PLY/JSON writers, point rendering.

Shared by the inference API's export (:mod:`projects.odin.apis.export`), the demo and the
visualisation hook of ``tools/test.py --show-dir`` (:mod:`projects.odin.engine.visualization`).
"""
from .instances import (
    flatten_instances,
    instance_palette,
    masks_to_instance_ids,
    overlay_instances,
    write_instance_ply,
    write_instances_json,
)
from .render import default_view, look_at_view, read_instance_ply, render_points

__all__ = ['flatten_instances', 'instance_palette', 'masks_to_instance_ids', 'overlay_instances',
           'write_instance_ply', 'write_instances_json', 'default_view', 'look_at_view',
           'read_instance_ply', 'render_points']
