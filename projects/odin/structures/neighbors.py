"""The k-NN and IDW entry points of the ODIN model.

Every neighbour search of the model (voxel k-NN graphs of :mod:`.multiview_geometry`, IDW
interpolations, nearest-point label transfer) goes through :func:`knn` of this module, and
:func:`idw` looks :func:`knn` up at call time. The model modules call them as ``neighbors.knn`` /
``neighbors.idw``. There is no switch in here: a tool that needs another neighbour selection for
the whole model (the official-golden parity check injects the golden's recorded selections; the
whole-model benchmark times the official brute-force formulation) substitutes :func:`knn` from
outside for the duration of a call, see :func:`projects.odin.parity.substitute_knn`. (This
module was ``projects.odin.models.neighbors``; that path is an alias of it.)

The default is :func:`projects.odin.ops.knn` (exact; ties ordered by ascending support index).
"""
from typing import Tuple

from torch import Tensor

from projects.odin.ops import knn as ops_knn

from .geometry import idw_from_neighbors


def knn(query: Tensor, support: Tensor, k: int, query_offsets: Tensor,
        support_offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """K nearest support points per query within its scene: :func:`projects.odin.ops.knn`.

    Same arguments and result (``idx`` ``(M, k)``, ``dist`` ``(M, k)``); the one k-NN entry point
    of the model, which tools may substitute (see the module docstring).
    """
    return ops_knn(query, support, k, query_offsets, support_offsets)


def idw(src_feats: Tensor, src_xyz: Tensor, src_offsets: Tensor, tgt_xyz: Tensor,
        tgt_offsets: Tensor, k: int = 8) -> Tensor:
    """IDW interpolation (``1/(d+1e-8)`` over the k nearest sources of the same scene).

    Args:
        src_feats: ``(Ns, C)`` source features.
        src_xyz: ``(Ns, 3)`` source coordinates.
        src_offsets: ``(B,)`` cumulative end index of each scene's sources.
        tgt_xyz: ``(Nt, 3)`` target coordinates.
        tgt_offsets: ``(B,)`` cumulative end index of each scene's targets.
        k: neighbours.

    Returns:
        ``(Nt, C)`` interpolated features (see
        :func:`projects.odin.structures.geometry.idw_interpolate`).
    """
    idx, dist = knn(tgt_xyz, src_xyz, k, tgt_offsets, src_offsets)
    return idw_from_neighbors(src_feats, idx, dist)
