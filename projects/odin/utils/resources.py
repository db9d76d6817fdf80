"""Where the library finds the project's own files (configs, model index) without a checkout.

The library never assumes that it runs from the repository it was developed in. A file of the
project (e.g. ``configs/odin/scannet_r50.py`` or ``model-index.yml``) is found, in this order:

1. in the package data folder ``projects/odin/.mim/`` (what an installation that ships the
   configs fills in, as ``mim`` does for the OpenMMLab packages, e.g. ``mmdet3d/.mim/configs``);
2. relative to the current working directory (running from a checkout, or from any folder that
   holds ``configs/``, as mmengine resolves a relative config path).

Anything else must be passed in by the caller (the tools and tests know the checkout). A file
that is in neither place raises :class:`FileNotFoundError` naming both places.
"""
import os
import os.path as osp
from typing import List

#: the package data folder (``projects/odin/.mim``)
PACKAGE_DATA = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim')


def resource_candidates(relpath: str) -> List[str]:
    """The places :func:`find_resource` looks at for ``relpath``, in order."""
    return [osp.join(PACKAGE_DATA, relpath), osp.abspath(osp.join(os.getcwd(), relpath))]


def find_resource(relpath: str) -> str:
    """The path of a project file, given relative to the project root.

    Args:
        relpath: e.g. ``'configs/odin/synthetic_r18_demo.py'`` or ``'configs/odin'`` (a folder).

    Returns:
        The first existing candidate (:func:`resource_candidates`).

    Raises:
        FileNotFoundError: in none of the places; the message names them and says how to pass
            the path explicitly.
    """
    candidates = resource_candidates(relpath)
    for path in candidates:
        if osp.exists(path):
            return path
    raise FileNotFoundError(
        f'{relpath} of the ODIN project not found: looked in the package data '
        f'({candidates[0]}) and in the working directory ({candidates[1]}). Pass its path '
        'explicitly, run from the project checkout, or install the project with its configs.')


def resolve_file(path: str) -> str:
    """``path`` if it exists as given, else :func:`find_resource` of it (relative paths only).

    Raises:
        FileNotFoundError: an absolute path that does not exist, or a relative one found
            nowhere.
    """
    if osp.exists(path):
        return path
    if osp.isabs(path):
        raise FileNotFoundError(f'no such file: {path}')
    return find_resource(path)


__all__ = ['PACKAGE_DATA', 'resource_candidates', 'find_resource', 'resolve_file']
