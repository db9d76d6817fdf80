"""The inference API: build a model, run it on a recording, export its predictions.

``init_odin_model`` (mmdet3d's ``init_model`` for ODIN), ``prepare_recording`` +
``inference_recording`` (a posed RGB-D recording read by
:mod:`projects.odin.datasets.recordings`) and the writers of :mod:`.export`. The demo
(:mod:`projects.odin.demo`, ``demo/odin_demo.py``) is a user of this API.

The recording readers and the demo used to live here; their old names still resolve, with a
``DeprecationWarning`` (see :mod:`projects.odin.utils.deprecation`).
"""
from .export import (
    flatten_instances,
    instance_palette,
    masks_to_instance_ids,
    overlay_instances,
    write_instance_ply,
    write_instances_json,
)
from .inference import (
    PreparedRecording,
    inference_recording,
    init_odin_model,
    prepare_recording,
    select_instances,
    set_vocabulary,
)

#: names that moved out of ``projects.odin.apis`` -> their module now
_MOVED = {
    'DemoError': 'projects.odin.demo.recording_demo',
    'DemoResult': 'projects.odin.demo.recording_demo',
    'run_recording_demo': 'projects.odin.demo.recording_demo',
    'RGBDFolderError': 'projects.odin.datasets.recordings',
    'RGBDSequence': 'projects.odin.datasets.recordings',
    'detect_layout': 'projects.odin.datasets.recordings',
    'load_rgbd_folder': 'projects.odin.datasets.recordings',
}


def __getattr__(name: str):
    """The deprecated names of :data:`_MOVED` (one warning each)."""
    if name in _MOVED:
        from projects.odin.utils.deprecation import deprecated_attribute
        return deprecated_attribute(__name__, name, _MOVED[name])
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'PreparedRecording', 'inference_recording', 'init_odin_model', 'prepare_recording',
    'select_instances', 'set_vocabulary', 'flatten_instances', 'instance_palette',
    'masks_to_instance_ids', 'overlay_instances', 'write_instance_ply', 'write_instances_json'
]
