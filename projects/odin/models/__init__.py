from .backbones import ODINResNet, ODINSwinTransformer, ResidualFusionBlock
from .data_preprocessor import ODINDataPreprocessor
from .odin import ODIN
from .odin_head import ODINHead
from .pixel_decoder import GhostPoints, ODINPixelDecoder
from .text_encoder import ODINTextEncoder

__all__ = [
    'ODIN', 'ODINDataPreprocessor', 'ODINResNet', 'ODINSwinTransformer', 'ResidualFusionBlock',
    'ODINPixelDecoder', 'ODINHead', 'GhostPoints', 'ODINTextEncoder'
]
