from .demo import DemoError, DemoResult, run_recording_demo
from .export import (
                     flatten_instances,
                     instance_palette,
                     masks_to_instance_ids,
                     overlay_instances,
                     write_instance_ply,
                     write_instances_json,
)
from .rgbd_folder import RGBDFolderError, RGBDSequence, detect_layout, load_rgbd_folder

__all__ = [
    'DemoError', 'DemoResult', 'run_recording_demo',
    'RGBDFolderError', 'RGBDSequence', 'detect_layout', 'load_rgbd_folder', 'flatten_instances',
    'instance_palette',
    'masks_to_instance_ids', 'overlay_instances', 'write_instance_ply', 'write_instances_json'
]
