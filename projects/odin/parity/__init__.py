"""Numerical parity with the official ODIN implementation on the reference goldens.

A tool library, not part of the model: neither :mod:`projects.odin` nor
:mod:`projects.odin.models` imports it, so building a model never loads it. Its users are
``tools/analysis_tools/check_official_parity.py``, the benchmarks (:func:`official_knn`,
:class:`NaiveCrossViewAttention`) and the tests.

* :mod:`.goldens` - the golden's rule-filled official weights, our model for them, its inputs;
* :mod:`.knn_ties` - k-NN selections modulo float64 near-ties, the k-NN stand-in of a run;
* :mod:`.stages` - one forward pass observed from outside and compared stage by stage;
* :mod:`.check` - :func:`run_parity`: the check of one golden, robust to the CPU's tie order;
* :mod:`.tolerances` - the tolerances and the error measure;
* :mod:`.cross_view_reference` - :class:`NaiveCrossViewAttention`, the official formulation of
  the cross-view block (the reference of ``CrossViewAttention`` in the benchmarks and tests).
"""
from .check import MAX_TRIALS, run_parity
from .cross_view_reference import NaiveCrossViewAttention
from .goldens import (
    DATASET_SETTINGS,
    build_parity_model,
    fill_value,
    filled_official_state_dict,
    golden_data,
    read_statedict_tsv,
)
from .knn_ties import (
    KnnCall,
    KnnSelections,
    TieRow,
    call_signature,
    knn_differences,
    near_ties,
    official_knn,
    substitute_knn,
)
from .stages import HOOKED_STAGES, Recorder, forward_and_compare
from .tolerances import MASK_RTOL, TIE_RTOL, TOLERANCE, rel_err

__all__ = [
    'MAX_TRIALS', 'run_parity', 'DATASET_SETTINGS', 'build_parity_model', 'fill_value',
    'filled_official_state_dict', 'golden_data', 'read_statedict_tsv', 'KnnCall',
    'KnnSelections', 'TieRow', 'call_signature', 'knn_differences', 'near_ties', 'official_knn',
    'substitute_knn', 'HOOKED_STAGES', 'Recorder', 'forward_and_compare', 'MASK_RTOL',
    'TIE_RTOL', 'TOLERANCE', 'rel_err', 'NaiveCrossViewAttention'
]
