"""Readers and writers of ScanNet's raw annotation files.

``<scene>_vh_clean_2.ply`` (mesh: x, y, z, red, green, blue, alpha + triangle faces),
``<scene>_vh_clean_2.labels.ply`` (the same vertices with a per-vertex NYU40 ``label``),
``<scene>.aggregation.json`` (``segGroups``: instances as lists of segment ids + a raw category),
``<scene>_vh_clean_2.0.010000.segs.json`` (``segIndices``: one segment id per vertex),
``scannetv2-labels.combined.tsv`` (raw category -> ScanNet200 ``id`` and ``nyu40id``) and the
``<scene>.txt`` meta file (``axisAlignment``).

All readers raise ``ValueError`` / ``FileNotFoundError`` naming the file on malformed input.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, Path]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A crash leaves either the old file or the new one, never a partial file.
    """
    path = str(path)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as fh:
        fh.write(data)
    os.replace(tmp, path)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode('utf-8'))


def read_mesh_ply(path: PathLike) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Read a ScanNet ``_vh_clean_2.ply`` mesh.

    Args:
        path (str | Path): The ply file.

    Returns:
        tuple: ``xyz`` (N, 3) float32, ``rgb`` (N, 3) uint8 (zeros if the ply has no colour) and
        ``faces`` (F, 3) int64 or None when the ply has no face element.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If the ply cannot be parsed or lacks x/y/z.
    """
    from plyfile import PlyData
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: mesh file not found')
    try:
        ply = PlyData.read(path)
        vert = ply['vertex'].data
    except Exception as exc:  # plyfile raises several exception types on corrupt input
        raise ValueError(f'{path}: cannot parse ply ({type(exc).__name__}: {exc})') from exc
    names = vert.dtype.names or ()
    if not {'x', 'y', 'z'} <= set(names):
        raise ValueError(f'{path}: vertex element has no x/y/z properties (has {names})')
    xyz = np.stack([vert['x'], vert['y'], vert['z']], axis=1).astype(np.float32)
    if {'red', 'green', 'blue'} <= set(names):
        rgb = np.stack([vert['red'], vert['green'], vert['blue']], axis=1).astype(np.uint8)
    else:
        rgb = np.zeros((len(xyz), 3), np.uint8)
    faces = None
    if 'face' in ply:
        fdata = ply['face'].data
        key = 'vertex_indices' if 'vertex_indices' in fdata.dtype.names else 'vertex_index'
        if len(fdata):
            faces = np.stack([np.asarray(f, dtype=np.int64) for f in fdata[key]])
        else:
            faces = np.zeros((0, 3), np.int64)
    return xyz, rgb, faces


def read_label_ply(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``_vh_clean_2.labels.ply``.

    Returns:
        tuple: ``xyz`` (N, 3) float32 and ``label`` (N,) int64 NYU40 ids (0 = unannotated).
    """
    from plyfile import PlyData
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: label mesh not found')
    try:
        vert = PlyData.read(path)['vertex'].data
    except Exception as exc:
        raise ValueError(f'{path}: cannot parse ply ({type(exc).__name__}: {exc})') from exc
    if 'label' not in (vert.dtype.names or ()):
        raise ValueError(f'{path}: vertex element has no "label" property')
    xyz = np.stack([vert['x'], vert['y'], vert['z']], axis=1).astype(np.float32)
    return xyz, np.asarray(vert['label'], dtype=np.int64)


def write_mesh_ply(path: PathLike,
                   xyz: np.ndarray,
                   rgb: np.ndarray,
                   faces: Optional[np.ndarray] = None,
                   label: Optional[np.ndarray] = None) -> None:
    """Write a binary little-endian ply in ScanNet's vertex layout (atomically).

    Args:
        path (str | Path): Destination.
        xyz (np.ndarray): (N, 3) float vertices.
        rgb (np.ndarray): (N, 3) uint8 colours (alpha 255 is added).
        faces (np.ndarray, optional): (F, 3) int triangle indices.
        label (np.ndarray, optional): (N,) NYU40 ids, written as the ushort ``label`` property
            (the ``.labels.ply`` layout).
    """
    from plyfile import PlyData, PlyElement
    n = len(xyz)
    fields = [('x', 'f4'), ('y', 'f4'), ('z', 'f4'), ('red', 'u1'), ('green', 'u1'),
              ('blue', 'u1'), ('alpha', 'u1')]
    if label is not None:
        fields.append(('label', 'u2'))
    vert = np.empty(n, dtype=fields)
    vert['x'], vert['y'], vert['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vert['red'], vert['green'], vert['blue'] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vert['alpha'] = 255
    if label is not None:
        vert['label'] = label
    elements = [PlyElement.describe(vert, 'vertex')]
    if faces is not None:
        face = np.empty(len(faces), dtype=[('vertex_indices', 'i4', (3,))])
        face['vertex_indices'] = faces
        elements.append(PlyElement.describe(face, 'face'))
    path = str(path)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    PlyData(elements, text=False, byte_order='<').write(tmp)
    os.replace(tmp, path)


def _read_json(path: PathLike, what: str) -> dict:
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: {what} not found')
    try:
        with open(path, encoding='utf-8') as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: invalid JSON in {what} ({exc})') from exc


def read_segs(path: PathLike, num_vertices: Optional[int] = None) -> np.ndarray:
    """Read ``_vh_clean_2.0.010000.segs.json``.

    Args:
        path (str | Path): The segs file.
        num_vertices (int, optional): If given, the length ``segIndices`` must have.

    Returns:
        np.ndarray: (N,) int64 raw segment id per vertex (ids are arbitrary integers).
    """
    data = _read_json(path, 'segment file')
    if 'segIndices' not in data:
        raise ValueError(f'{path}: no "segIndices" key in segment file')
    seg = np.asarray(data['segIndices'], dtype=np.int64)
    if num_vertices is not None and len(seg) != num_vertices:
        raise ValueError(f'{path}: {len(seg)} segment indices for a mesh of {num_vertices} '
                         'vertices')
    return seg


def read_aggregation(path: PathLike) -> List[dict]:
    """Read ``.aggregation.json``.

    Returns:
        list[dict]: the ``segGroups`` entries, each with ``id`` (int), ``label`` (str) and
        ``segments`` (list[int]).
    """
    data = _read_json(path, 'aggregation file')
    groups = data.get('segGroups')
    if not isinstance(groups, list):
        raise ValueError(f'{path}: no "segGroups" list in aggregation file')
    out = []
    for k, g in enumerate(groups):
        if not {'segments', 'label'} <= set(g):
            raise ValueError(f'{path}: segGroup #{k} lacks "segments" or "label"')
        out.append(dict(id=int(g.get('id', g.get('objectId', k))), label=str(g['label']),
                        segments=[int(s) for s in g['segments']]))
    return out


def write_json(path: PathLike, obj) -> None:
    """Atomically write ``obj`` as JSON."""
    atomic_write_text(path, json.dumps(obj))


def read_label_tsv(path: PathLike) -> Dict[str, Dict[str, int]]:
    """Read ``scannetv2-labels.combined.tsv``.

    Returns:
        dict: raw category name -> ``{'id': ScanNet200 raw id, 'nyu40id': NYU40 id}``.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: label mapping tsv not found')
    out = {}
    with open(path, encoding='utf-8') as fh:
        reader = csv.DictReader(fh, delimiter='\t')
        if not reader.fieldnames or not {'raw_category', 'id', 'nyu40id'} <= set(
                reader.fieldnames):
            raise ValueError(f'{path}: expected columns raw_category, id, nyu40id; got '
                             f'{reader.fieldnames}')
        for row in reader:
            try:
                out[row['raw_category']] = dict(id=int(row['id']),
                                                nyu40id=int(row['nyu40id'] or 0))
            except ValueError as exc:
                raise ValueError(f'{path}: bad row {row}') from exc
    return out


TSV_COLUMNS = ('id', 'raw_category', 'category', 'count', 'nyu40id', 'eigen13id', 'nyuClass',
               'nyu40class', 'eigen13class', 'ModelNet40', 'ModelNet10', 'ShapeNetCore55',
               'synsetoffset', 'wnsynsetid', 'wnsynsetkey', 'mpcat40', 'mpcat40index')


def write_label_tsv(path: PathLike, rows: Sequence[Tuple[int, str, int, str]]) -> None:
    """Write a ``scannetv2-labels.combined.tsv`` with ScanNet's columns.

    Args:
        path (str | Path): Destination.
        rows: ``(scannet200_id, raw_category, nyu40id, nyu40class)`` per category; the other
            columns are left empty.
    """
    lines = ['\t'.join(TSV_COLUMNS)]
    for sid, raw, nyu, nyuname in rows:
        vals = dict(id=str(sid), raw_category=raw, category=raw, count='1', nyu40id=str(nyu),
                    nyu40class=nyuname)
        lines.append('\t'.join(vals.get(c, '') for c in TSV_COLUMNS))
    atomic_write_text(path, '\n'.join(lines) + '\n')


def read_axis_align(path: PathLike) -> np.ndarray:
    """Read ``axisAlignment`` from a ScanNet ``<scene>.txt`` meta file (identity if absent).

    Returns:
        np.ndarray: (4, 4) float32.
    """
    path = str(path)
    mat = np.eye(4, dtype=np.float32)
    if not os.path.isfile(path):
        return mat
    with open(path, encoding='utf-8') as fh:
        for line in fh:
            if line.startswith('axisAlignment'):
                vals = line.split('=', 1)[1].split()
                if len(vals) != 16:
                    raise ValueError(f'{path}: axisAlignment has {len(vals)} values, expected 16')
                mat = np.asarray([float(v) for v in vals], np.float32).reshape(4, 4)
    return mat
