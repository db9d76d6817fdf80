from .odin_seg_metric import ODINSegMetric

__all__ = ['ODINSegMetric']
