"""Pure-numpy parts of ODIN's evaluation (ScanNet protocol), unit-testable without MMEngine."""
from .instance_eval import (
                            MIN_REGION_SIZE,
                            OVERLAPS,
                            accumulate_scene_matches,
                            compute_ap,
                            compute_averages,
                            format_instance_table,
                            instance_eval_from_matches,
                            match_scene,
)
from .scannet_format import (
                            ScanNetFormatError,
                            evaluate_instance_folder,
                            load_ids,
                            read_instance_prediction_file,
                            write_ids,
                            write_instance_submission,
                            write_semantic_submission,
)
from .semantic_eval import (
                            confusion_from_sparse,
                            format_semantic_table,
                            scene_confusion,
                            semantic_metrics,
)

__all__ = [
    'MIN_REGION_SIZE', 'OVERLAPS', 'accumulate_scene_matches', 'compute_ap', 'compute_averages',
    'format_instance_table', 'instance_eval_from_matches', 'match_scene', 'ScanNetFormatError',
    'evaluate_instance_folder', 'load_ids', 'read_instance_prediction_file', 'write_ids',
    'write_instance_submission', 'write_semantic_submission', 'confusion_from_sparse',
    'format_semantic_table', 'scene_confusion', 'semantic_metrics'
]
