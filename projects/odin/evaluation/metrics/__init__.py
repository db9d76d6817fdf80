from .multitask_metric import ODINMultiTaskMetric
from .odin_seg_metric import ODINSegMetric

__all__ = ['ODINSegMetric', 'ODINMultiTaskMetric']
