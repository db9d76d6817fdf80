from .backbones import ODINResNet, ODINSwinTransformer, ResidualFusionBlock
from .classifiers import BaseClassifier, LinearClassifier, OpenVocabClassifier
from .data_preprocessor import ODINDataPreprocessor
from .odin import ODIN
from .odin_head import ODINHead
from .pixel_decoder import ODINPixelDecoder
from .prediction_points import MeshPoints, MeshVoxels, PredictionPointSet, SensorPoints
from .text_encoder import ODINTextEncoder

__all__ = [
    'ODIN', 'ODINDataPreprocessor', 'ODINResNet', 'ODINSwinTransformer', 'ResidualFusionBlock',
    'ODINPixelDecoder', 'ODINHead', 'ODINTextEncoder', 'MeshPoints', 'SensorPoints',
    'MeshVoxels', 'PredictionPointSet', 'BaseClassifier', 'LinearClassifier',
    'OpenVocabClassifier'
]
