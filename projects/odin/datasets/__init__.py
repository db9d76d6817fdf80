"""ODIN data: multi-view RGB-D datasets, transforms, packing, converters, synthetic world."""
from .formatting import PackODINInputs
from .loading import LoadODINFrames, LoadODINSuperpoints, LoadRecordingFrames
from .multitask import (
                                 ODINMultiTaskBatchSampler,
                                 ODINMultiTaskDataset,
                                 ODINMultiTaskSampler,
                                 odin_multitask_collate,
)
from .multiview_datasets import (
                                 ODINAI2THORDataset,
                                 ODINMatterport3DDataset,
                                 ODINS3DISDataset,
                                 ODINScanNet200Dataset,
                                 ODINScanNetDataset,
)
from .transforms import (
                                 ODINCameraDrop,
                                 ODINColorJitter,
                                 ODINGlobalAug3D,
                                 ODINPointSegClassMapping,
                                 ODINRandomResizeCrop,
                                 ODINResize,
                                 ODINSensorPoints,
                                 odin_collate,
)

__all__ = [
    'ODINScanNetDataset', 'ODINScanNet200Dataset', 'ODINS3DISDataset', 'ODINMatterport3DDataset',
    'ODINAI2THORDataset', 'LoadODINFrames', 'LoadODINSuperpoints', 'LoadRecordingFrames',
    'ODINRandomResizeCrop',
    'ODINResize', 'ODINColorJitter', 'ODINGlobalAug3D', 'ODINCameraDrop',
    'ODINPointSegClassMapping', 'ODINSensorPoints', 'PackODINInputs', 'odin_collate',
    'ODINMultiTaskDataset', 'ODINMultiTaskSampler', 'ODINMultiTaskBatchSampler',
    'odin_multitask_collate'
]
