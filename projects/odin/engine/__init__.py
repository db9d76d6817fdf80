from .hooks import RNGStateHook
from .multitask_hooks import ODINTaskLossHook
from .visualization import ODINVisualizationHook

__all__ = ['RNGStateHook', 'ODINVisualizationHook', 'ODINTaskLossHook']
