"""The demo application, a user of the inference API (:mod:`projects.odin.apis`).

``demo/odin_demo.py`` is a command line over :func:`run_recording_demo`
(:mod:`.recording_demo`); around it: the memory estimate that refuses a run up front
(:mod:`.memory`, its measured lines in ``memory_costs.yml``), the progress bar over views and
stages (:mod:`.progress`), the README figure (:mod:`.figure`) and the synthetic end-to-end demo
of ``make demo`` with its training driver (:mod:`.synthetic_demo`).
"""
from .recording_demo import (
    DEFAULT_VIEW_CHUNK,
    DemoError,
    DemoResult,
    open_recording,
    run_recording_demo,
    write_demo_outputs,
)

__all__ = ['DEFAULT_VIEW_CHUNK', 'DemoError', 'DemoResult', 'open_recording',
           'run_recording_demo', 'write_demo_outputs']
