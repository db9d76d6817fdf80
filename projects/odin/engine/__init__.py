from .hooks import ODINLoggerHook, RNGStateHook, TrustedCheckpointHook
from .multitask_hooks import ODINTaskLossHook
from .visualization import ODINVisualizationHook

__all__ = ['RNGStateHook', 'TrustedCheckpointHook', 'ODINVisualizationHook', 'ODINTaskLossHook',
           'ODINLoggerHook']
