from .backbones import ODINResNet, ODINSwinTransformer, ResidualFusionBlock
from .classifiers import BaseClassifier, LinearClassifier, OpenVocabClassifier
from .data_preprocessor import ODINDataPreprocessor
from .multiview_encoder import ChunkPlan, MultiViewEncoder, MultiViewFeatures
from .odin import ODIN
from .odin_head import ODINHead
from .pixel_decoder import ODINPixelDecoder
from .prediction_points import (  # MeshPoints, SensorPoints: deprecated names of the builders
    MeshPoints,
    MeshPointsBuilder,
    MeshPointSet,
    MeshVoxels,
    PredictionPointSet,
    SensorPoints,
    SensorPointsBuilder,
    SensorPointSet,
)
from .text_encoder import ODINTextEncoder

__all__ = [
    'ODIN', 'ODINDataPreprocessor', 'ODINResNet', 'ODINSwinTransformer', 'ResidualFusionBlock',
    'ODINPixelDecoder', 'ODINHead', 'ODINTextEncoder', 'MeshPointsBuilder', 'SensorPointsBuilder',
    'MeshVoxels', 'PredictionPointSet', 'MeshPointSet', 'SensorPointSet', 'MultiViewEncoder',
    'MultiViewFeatures', 'ChunkPlan', 'BaseClassifier', 'LinearClassifier', 'OpenVocabClassifier',
    'MeshPoints', 'SensorPoints'
]
