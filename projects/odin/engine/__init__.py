from .hooks import RNGStateHook
from .visualization import ODINVisualizationHook

__all__ = ['RNGStateHook', 'ODINVisualizationHook']
