"""Export of ODIN's predictions: instance-coloured PLY point clouds, view overlays, JSON.

The writers live in :mod:`projects.odin.visualization.instances` (shared with the visualisation
hook of ``tools/test.py --show-dir``); this module is their place in the inference API.
"""
from projects.odin.visualization.instances import (
    flatten_instances,
    instance_palette,
    masks_to_instance_ids,
    overlay_instances,
    write_instance_ply,
    write_instances_json,
)

__all__ = ['flatten_instances', 'instance_palette', 'masks_to_instance_ids', 'overlay_instances',
           'write_instance_ply', 'write_instances_json']
