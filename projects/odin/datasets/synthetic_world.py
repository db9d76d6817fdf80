"""A deterministic synthetic labelled indoor world, written in ScanNet's raw layout.

Every scene is a rectangular room (floor, four walls, ceiling) furnished with objects built from
oriented boxes (tables with legs, chairs with backs, shelves, doors, pictures, ...). Each object is
one instance of a ScanNet class (NYU40 ids; ScanNet200 raw ids in the written label tsv), every
surface carries a procedural texture. Posed RGB-D frames are rendered by **exact ray casting**
against the boxes (vectorised numpy), so depth, colour and labels agree with the triangle mesh to
float precision: the mesh triangulates the very same box faces.

The output is the ScanNet raw release layout, so ``tools/create_data.py scannet`` converts it::

    OUT/scans/<scene>/<scene>.sens                         RGB-D stream (JPEG colour, zlib depth)
    OUT/scans/<scene>/<scene>_vh_clean_2.ply               mesh with vertex colours
    OUT/scans/<scene>/<scene>_vh_clean_2.labels.ply        NYU40 label per vertex
    OUT/scans/<scene>/<scene>.aggregation.json             instances (segGroups)
    OUT/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json  superpoints
    OUT/scans/<scene>/<scene>.txt                          meta (axisAlignment, sizes)
    OUT/scannetv2-labels.combined.tsv, OUT/scannetv2_{train,val}.txt

Usage: :func:`generate_world` or ``python tools/dataset_converters/make_synthetic_world.py``.
"""
from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .scannet_raw import atomic_write_text, write_json, write_label_tsv, write_mesh_ply
from .sens_data import (
    SensorFrame,
    SensorHeader,
    encode_color,
    encode_depth,
    make_intrinsic,
    write_sens,
)

# name -> (NYU40 id, ScanNet200 raw id, NYU40 class name). Ceiling, box and lamp are not ScanNet-20
# classes (ignored there) but are valid ScanNet200 classes.
SYNTHETIC_CLASSES: Dict[str, Tuple[int, int, str]] = {
    'wall': (1, 1, 'wall'),
    'floor': (2, 3, 'floor'),
    'cabinet': (3, 7, 'cabinet'),
    'bed': (4, 11, 'bed'),
    'chair': (5, 2, 'chair'),
    'couch': (6, 6, 'sofa'),
    'table': (7, 4, 'table'),
    'door': (8, 5, 'door'),
    'window': (9, 16, 'window'),
    'bookshelf': (10, 18, 'bookshelf'),
    'picture': (11, 15, 'picture'),
    'counter': (12, 35, 'counter'),
    'desk': (14, 9, 'desk'),
    'curtain': (16, 21, 'curtain'),
    'refrigerator': (24, 27, 'refridgerator'),
    'toilet': (33, 17, 'toilet'),
    'sink': (34, 14, 'sink'),
    'bathtub': (36, 42, 'bathtub'),
    'stool': (39, 38, 'otherfurniture'),
    'ceiling': (22, 41, 'ceiling'),
    'box': (29, 26, 'box'),
    'lamp': (35, 28, 'lamp'),
}

PRESETS: Dict[str, dict] = {
    # seconds on one CPU core: for unit tests and the demo
    'tiny': dict(depth_hw=(48, 64), color_hw=(96, 128), num_frames=10, num_objects=(7, 9),
                 room_spacing=0.5, object_spacing=0.2, room_size=((3.2, 4.0), (2.8, 3.4))),
    # small but realistic: CPU training / learning tests
    'small': dict(depth_hw=(120, 160), color_hw=(240, 320), num_frames=30,
                  num_objects=(12, 16), room_spacing=0.25, object_spacing=0.1),
    'default': dict(depth_hw=(240, 320), color_hw=(480, 640), num_frames=60,
                    num_objects=(16, 22), room_spacing=0.2, object_spacing=0.08),
    # `make demo`: learnable from scratch within minutes on a CPU. Eight furniture classes with
    # class-specific textures (colour jittered per instance), so that a small randomly
    # initialised network can learn semantics quickly; instances still have to be separated
    # by geometry (several chairs / pictures share a class colour).
    'demo': dict(depth_hw=(60, 80), color_hw=(120, 160), num_frames=12, num_objects=(6, 8),
                 room_spacing=0.25, object_spacing=0.1, class_textures=True,
                 floor_labels=('table', 'chair', 'couch', 'bed', 'cabinet', 'bookshelf',
                               'toilet', 'refrigerator'),
                 wall_labels=('door', 'window', 'picture')),
}


@dataclass
class WorldConfig:
    """Parameters of the generator (see ``PRESETS``).

    Attributes:
        depth_hw (tuple[int, int]): Depth image size (the converter's output size).
        color_hw (tuple[int, int]): Colour image size (resized to ``depth_hw`` by the converter).
        num_frames (int): Frames per scene in the ``.sens`` (convert with ``--frame-skip 1``).
        num_objects (tuple[int, int]): Inclusive range of furniture objects per room.
        room_size (tuple): ((min, max) x extent, (min, max) y extent) in metres.
        room_height (tuple[float, float]): Range of the ceiling height.
        room_spacing (float): Mesh vertex spacing on floor/walls/ceiling (m).
        object_spacing (float): Mesh vertex spacing on objects (m).
        segment_size (float): Edge of the square superpoint patches (m).
        focal_scale (float): fx = fy = focal_scale * depth width (ScanNet: 577.87 / 640).
        max_depth (float): Depth beyond this is invalid (0).
        hole_fraction (float): Fraction of depth pixels zeroed in random small holes.
        num_invalid_poses (int): Frames whose pose is written as -inf (lost tracking).
        num_unannotated (int): Clutter boxes left out of the annotation (label 0, no instance).
        jpeg_quality (int): Colour JPEG quality in the ``.sens``.
        class_textures (bool): Tie each object's texture to its class (a fixed colour and
            pattern per class, the colour jittered by ``class_texture_jitter`` per instance)
            instead of drawing it at random.
        class_texture_jitter (float): Per-channel colour jitter of class textures.
        floor_labels (tuple[str] | None): Floor-object classes to place (all of
            ``FLOOR_LABELS`` when None).
        wall_labels (tuple[str] | None): Wall-object classes to place (all of ``WALL_LABELS``
            when None).
    """

    depth_hw: Tuple[int, int] = (120, 160)
    color_hw: Tuple[int, int] = (240, 320)
    num_frames: int = 30
    num_objects: Tuple[int, int] = (12, 16)
    room_size: Tuple[Tuple[float, float], Tuple[float, float]] = ((4.0, 6.0), (3.5, 5.0))
    room_height: Tuple[float, float] = (2.5, 2.8)
    room_spacing: float = 0.25
    object_spacing: float = 0.1
    segment_size: float = 0.4
    focal_scale: float = 577.871 / 640.0
    max_depth: float = 10.0
    hole_fraction: float = 0.01
    num_invalid_poses: int = 0
    num_unannotated: int = 1
    jpeg_quality: int = 92
    class_textures: bool = False
    class_texture_jitter: float = 0.06
    floor_labels: Optional[Tuple[str, ...]] = None
    wall_labels: Optional[Tuple[str, ...]] = None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> WorldConfig:
        """Build a config from ``PRESETS[name]`` plus keyword overrides."""
        if name not in PRESETS:
            raise KeyError(f'unknown preset {name!r}; choose from {sorted(PRESETS)}')
        kw = dict(PRESETS[name])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)


@dataclass
class Box:
    """An oriented box: ``center`` (3,), ``half`` (3,) half extents, ``yaw`` about +z.

    ``inside=True`` marks the room shell (rays start inside and hit its inner faces).
    """

    center: np.ndarray
    half: np.ndarray
    yaw: float
    instance: int
    texture: int
    inside: bool = False


@dataclass
class Scene:
    """A generated scene.

    Attributes:
        name (str): ``scene%04d_00``.
        boxes (list[Box]): Geometry for ray casting.
        instances (list[dict]): One per instance: ``label`` (raw category), ``nyu40``,
            ``annotated`` (False for clutter left out of the aggregation).
        textures (np.ndarray): (T, 8) texture parameters (base rgb, second rgb, pattern, scale).
        room_faces (list[int]): instance id of the room's -x, +x, -y, +y, floor, ceiling faces.
        room_tex (list[int]): texture id of the same six faces.
        vertices (np.ndarray): (N, 3) float32 mesh vertices.
        faces (np.ndarray): (F, 3) int64 triangles.
        colors (np.ndarray): (N, 3) uint8 vertex colours.
        vertex_instance (np.ndarray): (N,) int64 instance id of each vertex.
        vertex_segment (np.ndarray): (N,) int64 raw superpoint id of each vertex.
        poses (np.ndarray): (F, 4, 4) float32 camera-to-world poses (OpenCV camera axes).
        intrinsic_depth (np.ndarray): (4, 4) float32 at ``depth_hw``.
        intrinsic_color (np.ndarray): (4, 4) float32 at ``color_hw``.
    """

    name: str
    boxes: List[Box]
    instances: List[dict]
    textures: np.ndarray
    room_faces: List[int]
    room_tex: List[int] = field(default_factory=list)
    vertices: np.ndarray = field(default=None)
    faces: np.ndarray = field(default=None)
    colors: np.ndarray = field(default=None)
    vertex_instance: np.ndarray = field(default=None)
    vertex_segment: np.ndarray = field(default=None)
    poses: np.ndarray = field(default=None)
    intrinsic_depth: np.ndarray = field(default=None)
    intrinsic_color: np.ndarray = field(default=None)


# ----------------------------------------------------------------------------------------------
# procedural textures and shading

_LIGHT = np.array([0.35, -0.45, 0.82])
_LIGHT = _LIGHT / np.linalg.norm(_LIGHT)


def _hash3(cells: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) for integer 3D cells (..., 3)."""
    c = cells.astype(np.int64) & 0xFFFF
    h = (c[..., 0] * 73856093) ^ (c[..., 1] * 19349663) ^ (c[..., 2] * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFFFF).astype(np.float64) / float(0x1000000)


def albedo(textures: np.ndarray, tex_id: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Evaluate the procedural textures.

    Args:
        textures (np.ndarray): (T, 8) rows ``(r, g, b, r2, g2, b2, pattern, scale)`` in [0, 1]
            (pattern 0 solid+noise, 1 stripes, 2 checker, 3 blotches).
        tex_id (np.ndarray): (M,) texture index per point.
        local (np.ndarray): (M, 3) point in the box's local frame (m).

    Returns:
        np.ndarray: (M, 3) float64 albedo in [0, 1].
    """
    t = textures[tex_id]
    base, second, pattern, scale = t[:, 0:3], t[:, 3:6], t[:, 6], t[:, 7]
    p = local / scale[:, None]
    noise = _hash3(np.floor(local / 0.04))[:, None] * 0.12 - 0.06
    stripes = (np.floor(p[:, 0] + p[:, 1] + p[:, 2]) % 2)
    checker = (np.floor(p[:, 0]) + np.floor(p[:, 1]) + np.floor(p[:, 2])) % 2
    blotch = (_hash3(np.floor(p * 2.0)) > 0.5).astype(np.float64)
    mix = np.select([pattern == 1, pattern == 2, pattern == 3], [stripes, checker, blotch], 0.0)
    col = base * (1 - mix[:, None]) + second * mix[:, None] + noise
    return np.clip(col, 0.0, 1.0)


def shade(col: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Lambert + ambient shading with a fixed light: (M, 3) albedo, (M, 3) normals -> uint8."""
    lam = np.clip(normal @ _LIGHT, 0.0, 1.0)
    out = col * (0.55 + 0.45 * lam)[:, None]
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# scene layout

def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class _Builder:
    """Accumulates instances, textures and boxes while a scene is laid out."""

    def __init__(self, rng: np.random.Generator, class_textures: bool = False,
                 jitter: float = 0.06) -> None:
        self.rng = rng
        self.boxes: List[Box] = []
        self.instances: List[dict] = []
        self.textures: List[List[float]] = []
        self.class_textures = class_textures
        self.jitter = jitter

    def texture(self, pattern: Optional[int] = None, base=None, label: Optional[str] = None,
                part: int = 0) -> int:
        """Add a texture; with class textures on, ``label`` (+ ``part``) fixes its look."""
        r = self.rng
        base = r.uniform(0.15, 0.9, 3) if base is None else np.asarray(base, float)
        second = np.clip(base * r.uniform(0.4, 0.8) + r.uniform(-0.1, 0.1, 3), 0, 1)
        pat = int(r.integers(0, 4)) if pattern is None else pattern
        if self.class_textures and label is not None:
            base, pat = class_texture(label, part)
            base = np.clip(base + r.uniform(-self.jitter, self.jitter, 3), 0, 1)
            second = np.clip(base * 0.6, 0, 1)
        self.textures.append([*base, *second, pat, float(r.uniform(0.06, 0.3))])
        return len(self.textures) - 1

    def instance(self, label: str, annotated: bool = True) -> int:
        nyu = SYNTHETIC_CLASSES[label][0] if label in SYNTHETIC_CLASSES else 0
        self.instances.append(dict(label=label, nyu40=nyu, annotated=annotated))
        return len(self.instances) - 1

    def part(self, inst: int, tex: int, center, size, yaw: float, origin, base_yaw: float) -> None:
        """Add a box given in an object's frame (``origin``, ``base_yaw``)."""
        rot = _rot_z(base_yaw)
        c = np.asarray(origin, float) + rot @ np.asarray(center, float)
        self.boxes.append(Box(c, np.asarray(size, float) / 2.0, base_yaw + yaw, inst, tex))


def _make_object(b: _Builder, label: str, origin: np.ndarray, yaw: float, annotated=True
                 ) -> float:
    """Add one object's parts at ``origin`` (floor contact, centre of the footprint).

    Returns the object's footprint radius (m), for spacing.
    """
    r = b.rng
    inst = b.instance(label, annotated)
    tex = b.texture(label=label)
    tex2 = b.texture(pattern=0, label=label, part=1)
    p = lambda c, s, t=tex: b.part(inst, t, c, s, 0.0, origin, yaw)  # noqa: E731
    if label == 'table' or label == 'desk':
        w, d, h = r.uniform(0.9, 1.6), r.uniform(0.6, 0.9), r.uniform(0.7, 0.78)
        p((0, 0, h - 0.03), (w, d, 0.06))
        if label == 'table':
            for sx in (-1, 1):
                for sy in (-1, 1):
                    p((sx * (w / 2 - 0.06), sy * (d / 2 - 0.06), (h - 0.06) / 2),
                      (0.06, 0.06, h - 0.06), tex2)
        else:
            for sx in (-1, 1):
                p((sx * (w / 2 - 0.03), 0, (h - 0.06) / 2), (0.05, d - 0.04, h - 0.06), tex2)
        return 0.5 * math.hypot(w, d)
    if label == 'chair' or label == 'stool':
        s, hs = r.uniform(0.4, 0.5), r.uniform(0.42, 0.48)
        p((0, 0, hs - 0.03), (s, s, 0.06))
        for sx in (-1, 1):
            for sy in (-1, 1):
                p((sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), (hs - 0.06) / 2),
                  (0.04, 0.04, hs - 0.06), tex2)
        if label == 'chair':
            hb = r.uniform(0.35, 0.5)
            p((0, -s / 2 + 0.03, hs + hb / 2), (s, 0.05, hb))
        return 0.5 * s * 1.42
    if label == 'couch':
        w, d = r.uniform(1.6, 2.2), r.uniform(0.8, 0.95)
        p((0, 0, 0.22), (w, d, 0.44))
        p((0, -d / 2 + 0.1, 0.6), (w, 0.2, 0.36))
        for sx in (-1, 1):
            p((sx * (w / 2 - 0.1), 0.05, 0.55), (0.2, d - 0.1, 0.2), tex2)
        return 0.5 * math.hypot(w, d)
    if label == 'bed':
        w, d = r.uniform(1.4, 1.8), r.uniform(1.9, 2.1)
        p((0, 0, 0.25), (w, d, 0.5))
        p((0, -d / 2 + 0.04, 0.55), (w, 0.08, 1.1), tex2)
        return 0.5 * math.hypot(w, d)
    if label in ('cabinet', 'refrigerator', 'counter', 'bathtub', 'box'):
        dims = dict(cabinet=((0.5, 1.0), (0.4, 0.6), (0.8, 1.9)),
                    refrigerator=((0.6, 0.8), (0.6, 0.7), (1.6, 1.9)),
                    counter=((1.2, 2.0), (0.55, 0.65), (0.88, 0.92)),
                    bathtub=((1.5, 1.7), (0.7, 0.8), (0.5, 0.6)),
                    box=((0.25, 0.5), (0.25, 0.5), (0.2, 0.45)))[label]
        w, d, h = (r.uniform(*x) for x in dims)
        p((0, 0, h / 2), (w, d, h))
        if label in ('cabinet', 'refrigerator'):
            p((0, d / 2 + 0.01, h / 2), (w * 0.9, 0.02, h * 0.92), tex2)
        return 0.5 * math.hypot(w, d)
    if label == 'bookshelf':
        w, d, h = r.uniform(0.8, 1.2), r.uniform(0.3, 0.4), r.uniform(1.5, 2.0)
        p((0, -d / 2 + 0.02, h / 2), (w, 0.04, h))
        for sx in (-1, 1):
            p((sx * (w / 2 - 0.02), 0, h / 2), (0.04, d, h))
        for k in range(4):
            p((0, 0, 0.02 + k * (h - 0.04) / 3), (w - 0.08, d, 0.04), tex2)
        return 0.5 * math.hypot(w, d)
    if label == 'toilet':
        p((0, 0.05, 0.2), (0.38, 0.5, 0.4))
        p((0, -0.22, 0.55), (0.42, 0.18, 0.3), tex2)
        return 0.4
    if label == 'sink':
        p((0, 0, 0.4), (0.12, 0.12, 0.8), tex2)
        p((0, 0, 0.85), (0.55, 0.42, 0.14))
        return 0.35
    if label == 'lamp':
        p((0, 0, 0.7), (0.05, 0.05, 1.4), tex2)
        p((0, 0, 1.45), (0.35, 0.35, 0.25))
        return 0.25
    raise KeyError(f'no floor-object generator for {label!r}')


FLOOR_LABELS = ('table', 'desk', 'chair', 'stool', 'couch', 'bed', 'cabinet', 'refrigerator',
                'counter', 'bathtub', 'bookshelf', 'toilet', 'sink', 'box', 'lamp')
WALL_LABELS = ('door', 'window', 'picture', 'curtain')
# objects that must stay below the camera band in the middle of the room
_TALL = ('cabinet', 'refrigerator', 'bookshelf', 'lamp', 'bed', 'counter', 'bathtub')


def class_texture(label: str, part: int = 0) -> Tuple[np.ndarray, int]:
    """The fixed look of a class with ``WorldConfig.class_textures``: (base rgb, pattern).

    Colours are spread over the hue circle in ``SYNTHETIC_CLASSES`` order (saturated, mid
    brightness); ``part`` 1 (legs, fronts, frames) is a darker shade of the same hue.
    """
    names = list(SYNTHETIC_CLASSES)
    k = names.index(label) if label in names else len(names)
    hue = (k * 0.618034) % 1.0  # golden-ratio steps keep neighbouring classes apart
    value = 0.85 if part == 0 else 0.45
    rgb = np.asarray(colorsys.hsv_to_rgb(hue, 0.75, value), dtype=np.float64)
    return rgb, (k % 3 if part == 0 else 0)


def build_scene(seed: int, index: int, cfg: WorldConfig) -> Scene:
    """Lay out one room deterministically from ``(seed, index)``.

    Args:
        seed (int): World seed.
        index (int): Scene index (scene name ``scene%04d_00``).
        cfg (WorldConfig): Generator parameters.

    Returns:
        Scene: with boxes, instances, textures, mesh and camera poses filled in.
    """
    rng = np.random.default_rng([seed, index])
    b = _Builder(rng, cfg.class_textures, cfg.class_texture_jitter)
    lx, ly = rng.uniform(*cfg.room_size[0]), rng.uniform(*cfg.room_size[1])
    hz = rng.uniform(*cfg.room_height)
    # room shell: one inside-box; faces -x, +x, -y, +y are walls, then floor, ceiling
    room_faces = [b.instance('wall') for _ in range(4)] + [b.instance('floor'),
                                                           b.instance('ceiling')]
    wall_tex = b.texture(pattern=rng.choice([0, 3]), label='wall')
    floor_tex = b.texture(pattern=rng.choice([1, 2]), label='floor')
    ceil_tex = b.texture(pattern=0, base=(0.85, 0.85, 0.82))
    b.boxes.append(Box(np.array([lx / 2, ly / 2, hz / 2]), np.array([lx / 2, ly / 2, hz / 2]),
                       0.0, -1, -1, inside=True))
    room_tex = [wall_tex] * 4 + [floor_tex, ceil_tex]

    # wall objects: door, window(+curtain), pictures
    wall_items = ['door', 'window', 'picture', 'picture']
    if rng.random() < 0.7:
        wall_items.append('curtain')
    if cfg.wall_labels is not None:
        wall_items = [w for w in wall_items if w in cfg.wall_labels]
    used: List[Tuple[int, float, float]] = []  # (wall, lo, hi) along the wall
    for label in wall_items:
        for _ in range(30):
            wall = int(rng.integers(0, 4))
            length = lx if wall >= 2 else ly
            w = dict(door=0.9, window=rng.uniform(0.8, 1.4), picture=rng.uniform(0.4, 0.8),
                     curtain=rng.uniform(0.5, 0.9))[label]
            if length < w + 0.4:
                continue
            pos = rng.uniform(0.2 + w / 2, length - 0.2 - w / 2)
            if any(u == wall and pos + w / 2 > lo and pos - w / 2 < hi for u, lo, hi in used):
                continue
            used.append((wall, pos - w / 2, pos + w / 2))
            z0, h, t = dict(door=(0.0, 2.0, 0.04), window=(0.9, 1.1, 0.03),
                            picture=(rng.uniform(1.3, 1.6), rng.uniform(0.3, 0.6), 0.03),
                            curtain=(0.3, 1.9, 0.06))[label]
            inst = b.instance(label)
            tex = b.texture(label=label)
            # wall-local frame: u along the wall, v into the room
            if wall == 0:
                c, size = (t / 2, pos, z0 + h / 2), (t, w, h)
            elif wall == 1:
                c, size = (lx - t / 2, pos, z0 + h / 2), (t, w, h)
            elif wall == 2:
                c, size = (pos, t / 2, z0 + h / 2), (w, t, h)
            else:
                c, size = (pos, ly - t / 2, z0 + h / 2), (w, t, h)
            b.boxes.append(Box(np.asarray(c, float), np.asarray(size, float) / 2, 0.0, inst, tex))
            break

    # floor objects, rejection-sampled on the floor plan
    n_obj = int(rng.integers(cfg.num_objects[0], cfg.num_objects[1] + 1))
    placed: List[Tuple[float, float, float]] = []
    cam_r = (0.25 * lx, 0.25 * ly)  # camera ellipse half-axes around the room centre
    # every class once (in random order) before any repeats, for class variety
    order = [str(x) for x in rng.permutation(cfg.floor_labels or FLOOR_LABELS)]
    labels = [order[k % len(order)] for k in range(n_obj)]
    labels += ['box'] * cfg.num_unannotated
    for k, label in enumerate(labels):
        annotated = k < n_obj
        for _ in range(60):
            along_wall = label in _TALL or rng.random() < 0.5
            if along_wall:
                wall = int(rng.integers(0, 4))
                m = 0.55
                if wall < 2:
                    x = m if wall == 0 else lx - m
                    y = rng.uniform(m, ly - m)
                    yaw = -math.pi / 2 if wall == 0 else math.pi / 2
                else:
                    y = m if wall == 2 else ly - m
                    x = rng.uniform(m, lx - m)
                    yaw = 0.0 if wall == 2 else math.pi
            else:
                x, y = rng.uniform(0.6, lx - 0.6), rng.uniform(0.6, ly - 0.6)
                yaw = rng.uniform(-math.pi, math.pi)
            rad = 0.45 if label in ('chair', 'stool', 'box', 'toilet', 'sink', 'lamp') else 0.9
            if any(math.hypot(x - px, y - py) < rad + pr for px, py, pr in placed):
                continue
            # keep the camera path free (cameras fly at 1.2-1.6 m on an ellipse)
            ex, ey = (x - lx / 2) / cam_r[0], (y - ly / 2) / cam_r[1]
            if abs(math.hypot(ex, ey) - 1.0) < 0.35 and label in _TALL:
                continue
            n_before = len(b.boxes)
            rad = _make_object(b, label, np.array([x, y, 0.0]), yaw, annotated)
            tops = [bx.center[2] + bx.half[2] for bx in b.boxes[n_before:]]
            if max(tops) > 1.05 and abs(math.hypot(ex, ey) - 1.0) < 0.45:
                # tall part in the camera band: undo and retry
                del b.boxes[n_before:]
                b.instances.pop()
                b.textures = b.textures[:-2]
                continue
            placed.append((x, y, rad))
            break

    scene = Scene(f'scene{index:04d}_00', b.boxes, b.instances,
                  np.asarray(b.textures, dtype=np.float64), room_faces, room_tex)
    _build_mesh(scene, cfg)
    _build_cameras(scene, cfg, rng, (lx, ly, hz))
    return scene


# ----------------------------------------------------------------------------------------------
# mesh

def _face_grid(origin, u, v, nu: int, nv: int):
    """Grid of (nu+1)*(nv+1) points on the parallelogram origin + s*u + t*v, and its triangles."""
    s = np.linspace(0.0, 1.0, nu + 1)
    t = np.linspace(0.0, 1.0, nv + 1)
    ss, tt = np.meshgrid(s, t, indexing='ij')
    pts = origin[None] + ss.reshape(-1, 1) * u[None] + tt.reshape(-1, 1) * v[None]
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nu + 1, nv + 1)
    a, b_, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    tris = np.concatenate([np.stack([a, b_, c], -1).reshape(-1, 3),
                           np.stack([a, c, d], -1).reshape(-1, 3)])
    return pts, tris, ss.reshape(-1), tt.reshape(-1)


def _box_faces(box: Box):
    """Yield (origin, u, v, normal, face_index) of the 6 faces, u x v = outward normal.

    For the room shell the normals point inwards (into the room).
    """
    rot = _rot_z(box.yaw)
    h = box.half
    for axis in range(3):
        for sign in (-1.0, 1.0):
            a1, a2 = (axis + 1) % 3, (axis + 2) % 3
            n_local = np.zeros(3)
            n_local[axis] = sign
            e1, e2 = np.zeros(3), np.zeros(3)
            e1[a1], e2[a2] = 2 * h[a1], 2 * h[a2]
            corner = -h.copy()
            corner[axis] = sign * h[axis]
            if sign < 0:  # keep u x v along +normal
                e1, e2 = e2, e1
            normal = -n_local if box.inside else n_local
            if box.inside:
                e1, e2 = e2, e1
            yield (box.center + rot @ corner, rot @ e1, rot @ e2, rot @ normal,
                   axis * 2 + int(sign > 0))


def _build_mesh(scene: Scene, cfg: WorldConfig) -> None:
    verts, tris, inst, seg, cols = [], [], [], [], []
    n = 0
    for box in scene.boxes:
        spacing = cfg.room_spacing if box.inside else cfg.object_spacing
        for origin, u, v, normal, fidx in _box_faces(box):
            if box.inside:
                # order of room faces: x-, x+, y-, y+, floor(z-), ceiling(z+)
                instance = scene.room_faces[fidx]
                tex = scene.room_tex[fidx]
            else:
                if fidx == 4 and box.center[2] - box.half[2] < 1e-6:
                    continue  # bottom face resting on the floor is never visible
                instance, tex = box.instance, box.texture
            lu, lv = np.linalg.norm(u), np.linalg.norm(v)
            nu, nv = max(1, int(math.ceil(lu / spacing))), max(1, int(math.ceil(lv / spacing)))
            pts, tr, ss, tt = _face_grid(origin, u, v, nu, nv)
            # superpoints: square patches of segment_size on this face
            pu = max(1, int(round(lu / cfg.segment_size)))
            pv = max(1, int(round(lv / cfg.segment_size)))
            patch = (np.minimum((ss * pu).astype(int), pu - 1) * pv +
                     np.minimum((tt * pv).astype(int), pv - 1))
            seg_ids = np.zeros(len(pts), np.int64)
            for pid in np.unique(patch):  # raw id = global index of the patch's first vertex
                m = patch == pid
                seg_ids[m] = n + int(np.argmax(m))
            local = _to_local(box, pts)
            col = shade(albedo(scene.textures, np.full(len(pts), tex), local),
                        np.repeat(normal[None], len(pts), 0))
            verts.append(pts)
            tris.append(tr + n)
            inst.append(np.full(len(pts), instance, np.int64))
            seg.append(seg_ids)
            cols.append(col)
            n += len(pts)
    scene.vertices = np.concatenate(verts).astype(np.float32)
    scene.faces = np.concatenate(tris).astype(np.int64)
    scene.vertex_instance = np.concatenate(inst)
    scene.vertex_segment = np.concatenate(seg)
    scene.colors = np.concatenate(cols)


def _to_local(box: Box, pts: np.ndarray) -> np.ndarray:
    """World points -> box-local frame (rotation about the box centre); room: world frame."""
    if box.inside:
        return pts - (box.center - box.half)
    return (pts - box.center) @ _rot_z(box.yaw)


# ----------------------------------------------------------------------------------------------
# cameras and ray casting

def look_pose(position: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world pose (OpenCV axes: x right, y down, z forward) for a yaw/pitch camera."""
    f = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                  math.sin(pitch)])
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    d = np.cross(f, r)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = r, d, f, position
    return pose


def _build_cameras(scene: Scene, cfg: WorldConfig, rng: np.random.Generator, dims) -> None:
    lx, ly, hz = dims
    n = cfg.num_frames
    phase = rng.uniform(0, 2 * math.pi)
    poses = []
    for k in range(n):
        th = phase + 2 * math.pi * k / n
        pos = np.array([lx / 2 + 0.25 * lx * math.cos(th), ly / 2 + 0.25 * ly * math.sin(th),
                        min(1.4 + 0.15 * math.sin(3 * th), hz - 0.4)])
        yaw = th + math.pi + 1.1 * math.sin(2 * th + phase)
        pitch = -0.35 + 0.12 * math.sin(5 * th)
        poses.append(look_pose(pos, yaw, pitch))
    scene.poses = np.asarray(poses, np.float32)
    dh, dw = cfg.depth_hw
    ch, cw = cfg.color_hw
    f = cfg.focal_scale * dw
    scene.intrinsic_depth = make_intrinsic(f, f, (dw - 1) / 2.0, (dh - 1) / 2.0)
    sx, sy = cw / dw, ch / dh  # pixel-centre consistent scaling of the depth camera
    scene.intrinsic_color = make_intrinsic(f * sx, f * sy, ((dw - 1) / 2.0 + 0.5) * sx - 0.5,
                                           ((dh - 1) / 2.0 + 0.5) * sy - 0.5)


def raycast(scene: Scene, origin: np.ndarray, dirs: np.ndarray, chunk: int = 8192):
    """Exact first-hit ray casting against the scene's boxes.

    Args:
        scene (Scene): The scene.
        origin (np.ndarray): (3,) ray origin (camera centre).
        dirs (np.ndarray): (R, 3) directions (not necessarily unit length); the returned ``t`` is
            in units of the direction vectors (camera-z depth when ``dirs`` have unit camera z).
        chunk (int): Rays per vectorised block.

    Returns:
        tuple: ``t`` (R,) float64 hit distance (inf on miss), ``box`` (R,) int64 hit box index
        (-1 on miss), ``face`` (R,) int64 face index (axis*2 + (sign>0)), ``normal`` (R, 3).
    """
    centers = np.stack([bx.center for bx in scene.boxes])
    halves = np.stack([bx.half for bx in scene.boxes])
    rots = np.stack([_rot_z(bx.yaw) for bx in scene.boxes])  # local->world
    inside = np.array([bx.inside for bx in scene.boxes])
    o_loc = np.einsum('bji,bj->bi', rots, origin[None] - centers)  # (B, 3)
    r = len(dirs)
    t_out = np.full(r, np.inf)
    box_out = np.full(r, -1, np.int64)
    face_out = np.zeros(r, np.int64)
    for s in range(0, r, chunk):
        d = dirs[s:s + chunk]
        d_loc = np.einsum('bji,rj->bri', rots, d)  # (B, R, 3)
        with np.errstate(divide='ignore', invalid='ignore'):
            inv = 1.0 / d_loc
            t1 = (-halves[:, None] - o_loc[:, None]) * inv
            t2 = (halves[:, None] - o_loc[:, None]) * inv
        # parallel rays: inside the slab -> (-inf, inf), outside -> empty
        par = d_loc == 0
        inslab = np.abs(o_loc[:, None]) <= halves[:, None]
        t1 = np.where(par, np.where(inslab, -np.inf, np.inf), t1)
        t2 = np.where(par, np.where(inslab, np.inf, -np.inf), t2)
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        t_near, ax_near = tmin.max(-1), tmin.argmax(-1)
        t_far, ax_far = tmax.min(-1), tmax.argmin(-1)
        hit = t_near <= t_far
        t_hit = np.where(inside[:, None], t_far, t_near)
        ax = np.where(inside[:, None], ax_far, ax_near)
        valid = hit & (t_hit > 1e-9)
        t_hit = np.where(valid, t_hit, np.inf)
        best = t_hit.argmin(0)  # (R,)
        ridx = np.arange(len(d))
        tb = t_hit[best, ridx]
        axb = ax[best, ridx]
        comp = d_loc[best, ridx, axb]
        # entering a solid box through the face whose outward normal opposes the ray;
        # leaving the room through the face the ray points at
        pos_side = np.where(inside[best], comp > 0, comp < 0)
        t_out[s:s + chunk] = tb
        box_out[s:s + chunk] = np.where(np.isfinite(tb), best, -1)
        face_out[s:s + chunk] = axb * 2 + pos_side.astype(np.int64)
    normal = np.zeros((r, 3))
    ok = box_out >= 0
    ax = face_out[ok] // 2
    sign = np.where(face_out[ok] % 2 == 1, 1.0, -1.0)
    sign = np.where(inside[box_out[ok]], -sign, sign)
    n_loc = np.zeros((ok.sum(), 3))
    n_loc[np.arange(ok.sum()), ax] = sign
    normal[ok] = np.einsum('rij,rj->ri', rots[box_out[ok]], n_loc)
    return t_out, box_out, face_out, normal


def pixel_rays(pose: np.ndarray, k: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """World-frame ray directions with unit camera-z for every pixel (integer pixel coords).

    The unprojection of depth 1 by the pose's rotation
    (:func:`projects.odin.structures.geometry.unproject_depth`, float64).

    Returns:
        np.ndarray: (H*W, 3), row-major.
    """
    import torch

    from projects.odin.structures.geometry import unproject_depth
    rot = np.eye(4)
    rot[:3, :3] = pose[:3, :3]  # directions: the rotation only, camera z = 1 (float64)
    return unproject_depth(torch.ones((1, *hw), dtype=torch.float64),
                           torch.from_numpy(np.asarray(k, np.float64))[None],
                           torch.from_numpy(rot)[None]).numpy().reshape(-1, 3)


def _slab(o_loc: np.ndarray, d_loc: np.ndarray, half: np.ndarray, inside: bool):
    """Ray/box slab test of R rays against one box in its local frame.

    Returns:
        tuple: ``t`` (R,) first valid hit (inf if none) and ``face`` (R,) = axis * 2 + (side > 0).
    """
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / d_loc
        t1 = (-half - o_loc) * inv
        t2 = (half - o_loc) * inv
    par = d_loc == 0
    inslab = np.abs(o_loc) <= half
    t1 = np.where(par, np.where(inslab, -np.inf, np.inf), t1)
    t2 = np.where(par, np.where(inslab, np.inf, -np.inf), t2)
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near, t_far = tmin.max(-1), tmax.min(-1)
    hit = t_near <= t_far
    t = t_far if inside else t_near
    ax = tmax.argmin(-1) if inside else tmin.argmax(-1)
    comp = d_loc[np.arange(len(d_loc)), ax]
    pos_side = comp > 0 if inside else comp < 0
    return np.where(hit & (t > 1e-9), t, np.inf), ax * 2 + pos_side.astype(np.int64)


def raycast_image(scene: Scene, pose: np.ndarray, k: np.ndarray, hw: Tuple[int, int],
                  dirs: Optional[np.ndarray] = None):
    """First-hit ray casting of every pixel of a pinhole camera, box by box.

    Gives exactly the result of ``raycast(scene, origin, pixel_rays(pose, k, hw))`` (same ties:
    the lower box index wins) but tests each box only against the pixels inside the bounding
    rectangle of its projected corners, which is much faster for furniture-sized boxes.

    Args:
        scene (Scene): The scene.
        pose (np.ndarray): (4, 4) camera-to-world.
        k (np.ndarray): (4, 4) or (3, 3) intrinsics (no skew).
        hw (tuple[int, int]): Image size (H, W).
        dirs (np.ndarray, optional): ``pixel_rays(pose, k, hw)`` if already computed.

    Returns:
        tuple: ``t``, ``box``, ``face``, ``normal`` as :func:`raycast` (row-major pixels).
    """
    h, w = hw
    pose = np.asarray(pose, np.float64)
    origin = pose[:3, 3]
    if dirs is None:
        dirs = pixel_rays(pose, k, hw)
    w2c = np.linalg.inv(pose)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    r = h * w
    t_out = np.full(r, np.inf)
    box_out = np.full(r, -1, np.int64)
    face_out = np.zeros(r, np.int64)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    for bi, bx in enumerate(scene.boxes):
        rot = _rot_z(bx.yaw)
        idx = None
        if not bx.inside:
            corners = bx.center + (signs * bx.half) @ rot.T
            cam = corners @ w2c[:3, :3].T + w2c[:3, 3]
            if (cam[:, 2] <= 0).all():
                continue
            if (cam[:, 2] > 1e-6).all():
                u, v = fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy
                c0, c1 = max(0, int(np.floor(u.min()))), min(w - 1, int(np.ceil(u.max())))
                r0, r1 = max(0, int(np.floor(v.min()))), min(h - 1, int(np.ceil(v.max())))
                if c0 > c1 or r0 > r1:
                    continue
                idx = (np.arange(r0, r1 + 1)[:, None] * w + np.arange(c0, c1 + 1)[None]).ravel()
        d = dirs if idx is None else dirs[idx]
        t, face = _slab(rot.T @ (origin - bx.center), d @ rot, bx.half, bx.inside)
        sel = np.arange(r) if idx is None else idx
        better = t < t_out[sel]
        sel = sel[better]
        t_out[sel], box_out[sel], face_out[sel] = t[better], bi, face[better]
    normal = np.zeros((r, 3))
    ok = box_out >= 0
    inside = np.array([bx.inside for bx in scene.boxes])
    rots = np.stack([_rot_z(bx.yaw) for bx in scene.boxes])
    ax = face_out[ok] // 2
    sign = np.where(face_out[ok] % 2 == 1, 1.0, -1.0)
    sign = np.where(inside[box_out[ok]], -sign, sign)
    n_loc = np.zeros((int(ok.sum()), 3))
    n_loc[np.arange(int(ok.sum())), ax] = sign
    normal[ok] = np.einsum('rij,rj->ri', rots[box_out[ok]], n_loc)
    return t_out, box_out, face_out, normal


def render(scene: Scene, pose: np.ndarray, k: np.ndarray, hw: Tuple[int, int],
           max_depth: float = 10.0) -> Dict[str, np.ndarray]:
    """Render depth (m), shaded colour and labels for one camera.

    Args:
        scene (Scene): The scene.
        pose (np.ndarray): (4, 4) camera-to-world.
        k (np.ndarray): (4, 4) or (3, 3) intrinsics for ``hw``.
        hw (tuple[int, int]): Image size (H, W).
        max_depth (float): Hits farther than this are reported as depth 0 / instance -1.

    Returns:
        dict: ``depth`` (H, W) float64 metres (0 = invalid), ``color`` (H, W, 3) uint8 RGB,
        ``instance`` (H, W) int64 (-1 = none), ``nyu40`` (H, W) int64.
    """
    h, w = hw
    origin = pose[:3, 3].astype(np.float64)
    dirs = pixel_rays(pose.astype(np.float64), k, hw)
    t, box, face, normal = raycast_image(scene, pose, k, hw, dirs)
    ok = (box >= 0) & (t <= max_depth)
    pts = origin[None] + dirs * np.where(ok, t, 0.0)[:, None]
    inst = np.full(len(t), -1, np.int64)
    tex = np.zeros(len(t), np.int64)
    local = np.zeros((len(t), 3))
    for bi in np.unique(box[ok]):
        m = ok & (box == bi)
        bx = scene.boxes[bi]
        if bx.inside:
            inst[m] = np.asarray(scene.room_faces)[face[m]]
            tex[m] = np.asarray(scene.room_tex)[face[m]]
        else:
            inst[m], tex[m] = bx.instance, bx.texture
        local[m] = _to_local(bx, pts[m])
    col = np.zeros((len(t), 3), np.uint8)
    col[ok] = shade(albedo(scene.textures, tex[ok], local[ok]), normal[ok])
    nyu = np.zeros(len(t), np.int64)
    inst_nyu = np.array([i['nyu40'] for i in scene.instances])
    nyu[ok] = inst_nyu[inst[ok]]
    return dict(depth=np.where(ok, t, 0.0).reshape(h, w), color=col.reshape(h, w, 3),
                instance=inst.reshape(h, w), nyu40=nyu.reshape(h, w))


def _holes(rng: np.random.Generator, hw, fraction: float) -> np.ndarray:
    """Boolean mask of a few small rectangular holes covering about ``fraction`` of the image."""
    h, w = hw
    mask = np.zeros(hw, bool)
    if fraction <= 0:
        return mask
    target = fraction * h * w
    while mask.sum() < target:
        rh, rw = int(rng.integers(1, max(2, h // 12))), int(rng.integers(1, max(2, w // 12)))
        y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        mask[y:y + rh, x:x + rw] = True
    return mask


# ----------------------------------------------------------------------------------------------
# writers

def write_scene(scene: Scene, scan_dir: Union[str, Path], cfg: WorldConfig, seed: int) -> dict:
    """Render the frames and write one scene in the ScanNet raw layout.

    Returns:
        dict: small summary (``num_vertices``, ``num_instances``, ``num_frames``).
    """
    scan_dir = Path(scan_dir)
    scan_dir.mkdir(parents=True, exist_ok=True)
    name = scene.name
    rng = np.random.default_rng([seed, int(name[5:9]), 7])
    # mesh + labels
    inst_meta = scene.instances
    annotated = np.array([m['annotated'] for m in inst_meta])
    v_inst = scene.vertex_instance
    v_label = np.where(annotated[v_inst], np.array([m['nyu40'] for m in inst_meta])[v_inst], 0)
    write_mesh_ply(scan_dir / f'{name}_vh_clean_2.ply', scene.vertices, scene.colors,
                   scene.faces)
    palette = np.asarray(_label_palette(), np.uint8)
    write_mesh_ply(scan_dir / f'{name}_vh_clean_2.labels.ply', scene.vertices,
                   palette[v_label % len(palette)], scene.faces, label=v_label)
    segs_file = f'{name}_vh_clean_2.0.010000.segs.json'
    write_json(scan_dir / segs_file,
               dict(params=dict(kThresh='0.01', segMinVerts='20', minPoints='750',
                                maxPoints='30000', thinThresh='0.05', flatThresh='0.001',
                                minLength='0.02', maxLength='1'),
                    sceneId=name, segIndices=scene.vertex_segment.tolist()))
    groups = []
    for iid, meta in enumerate(inst_meta):
        if not meta['annotated']:
            continue
        segs = np.unique(scene.vertex_segment[v_inst == iid])
        if len(segs) == 0:
            continue
        groups.append(dict(id=len(groups), objectId=len(groups), segments=segs.tolist(),
                           label=meta['label']))
    write_json(scan_dir / f'{name}.aggregation.json',
               dict(sceneId=f'scannet.{name}', appId='odin.synthetic_world.v1',
                    segGroups=groups, segmentsFile=f'scannet.{segs_file}'))
    # frames
    dh, dw = cfg.depth_hw
    ch, cw = cfg.color_hw
    frames = []
    invalid = set(rng.choice(len(scene.poses), size=min(cfg.num_invalid_poses,
                                                        len(scene.poses)),
                             replace=False).tolist()) if cfg.num_invalid_poses else set()
    for k, pose in enumerate(scene.poses):
        dep = render(scene, pose.astype(np.float64), scene.intrinsic_depth, (dh, dw),
                     cfg.max_depth)['depth']
        col = render(scene, pose.astype(np.float64), scene.intrinsic_color, (ch, cw),
                     cfg.max_depth)['color']
        dmm = np.round(dep * 1000.0)
        dmm[_holes(rng, (dh, dw), cfg.hole_fraction)] = 0
        dmm = np.clip(dmm, 0, 65535).astype(np.uint16)
        out_pose = np.full((4, 4), -np.inf, np.float32) if k in invalid else pose
        frames.append(SensorFrame(out_pose, encode_color(col, 'jpeg', cfg.jpeg_quality),
                                  encode_depth(dmm), k * 33333, k * 33333))
    header = SensorHeader('odin-synthetic', scene.intrinsic_color, np.eye(4, dtype=np.float32),
                          scene.intrinsic_depth, np.eye(4, dtype=np.float32), 'jpeg',
                          'zlib_ushort', cw, ch, dw, dh, 1000.0, len(frames))
    write_sens(scan_dir / f'{name}.sens', header, frames)
    kd, kc = scene.intrinsic_depth, scene.intrinsic_color
    meta_txt = [
        'axisAlignment = ' + ' '.join(str(float(x)) for x in np.eye(4).reshape(-1)),
        f'colorHeight = {ch}', f'colorWidth = {cw}', f'depthHeight = {dh}',
        f'depthWidth = {dw}', f'fx_color = {kc[0, 0]}', f'fx_depth = {kd[0, 0]}',
        f'fy_color = {kc[1, 1]}', f'fy_depth = {kd[1, 1]}', f'mx_color = {kc[0, 2]}',
        f'mx_depth = {kd[0, 2]}', f'my_color = {kc[1, 2]}', f'my_depth = {kd[1, 2]}',
        f'numColorFrames = {len(frames)}', f'numDepthFrames = {len(frames)}',
        'numIMUmeasurements = 0', 'sceneType = Synthetic'
    ]
    atomic_write_text(scan_dir / f'{name}.txt', '\n'.join(meta_txt) + '\n')
    return dict(num_vertices=int(len(scene.vertices)), num_instances=len(groups),
                num_frames=len(frames), invalid_pose_frames=sorted(invalid))


def _label_palette() -> List[Tuple[int, int, int]]:
    rng = np.random.default_rng(40)
    pal = rng.integers(40, 255, size=(41, 3))
    pal[0] = 0
    return [tuple(int(c) for c in row) for row in pal]


def generate_world(out_dir: Union[str, Path],
                   num_scenes: int = 2,
                   seed: int = 0,
                   preset: str = 'tiny',
                   num_val: Optional[int] = None,
                   **overrides) -> dict:
    """Generate a synthetic world in ScanNet's raw layout.

    Args:
        out_dir (str | Path): Root (``scans/``, tsv and split files go here).
        num_scenes (int): Number of rooms. Defaults to 2.
        seed (int): World seed; the same seed gives byte-identical meshes, labels and frames.
        preset (str): Key of ``PRESETS`` ('tiny', 'small', 'default'). Defaults to 'tiny'.
        num_val (int, optional): Scenes put in the val split (the last ones). Defaults to
            ``max(1, num_scenes // 4)`` when ``num_scenes > 1`` else 0.
        **overrides: ``WorldConfig`` fields overriding the preset.

    Returns:
        dict: ``scenes`` (list of names), ``splits`` and per-scene summaries; also written to
        ``OUT/synthetic_world.json``.
    """
    if num_scenes < 1:
        raise ValueError(f'num_scenes must be >= 1, got {num_scenes}')
    cfg = WorldConfig.from_preset(preset, **overrides)
    out_dir = Path(out_dir)
    (out_dir / 'scans').mkdir(parents=True, exist_ok=True)
    summary = dict(seed=seed, preset=preset, config=_jsonable(cfg.__dict__), scenes={})
    names = []
    for i in range(num_scenes):
        scene = build_scene(seed, i, cfg)
        summary['scenes'][scene.name] = write_scene(scene, out_dir / 'scans' / scene.name, cfg,
                                                    seed)
        names.append(scene.name)
    if num_val is None:
        num_val = max(1, num_scenes // 4) if num_scenes > 1 else 0
    splits = dict(train=names[:len(names) - num_val], val=names[len(names) - num_val:])
    for split, scenes in splits.items():
        atomic_write_text(out_dir / f'scannetv2_{split}.txt',
                          ''.join(f'{s}\n' for s in scenes))
    write_label_tsv(out_dir / 'scannetv2-labels.combined.tsv',
                    [(sid, name, nyu, nyuname)
                     for name, (nyu, sid, nyuname) in SYNTHETIC_CLASSES.items()])
    summary['splits'] = splits
    atomic_write_text(out_dir / 'synthetic_world.json', json.dumps(summary, indent=1))
    return summary


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        out[k] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


def scene_world_points(scene: Scene) -> np.ndarray:
    """Return the mesh vertices (N, 3) float32 (a convenience for tests and the demo)."""
    return scene.vertices


__all__ = [
    'SYNTHETIC_CLASSES', 'PRESETS', 'WorldConfig', 'class_texture', 'Box', 'Scene',
    'build_scene', 'render',
    'raycast', 'raycast_image', 'pixel_rays', 'look_pose', 'write_scene', 'generate_world',
    'albedo', 'shade', 'prepare_synthetic_dataset'
]


def prepare_synthetic_dataset(root: Union[str, Path],
                              num_scenes: int = 2,
                              seed: int = 0,
                              preset: str = 'tiny',
                              inpaint: bool = False,
                              workers: int = 1,
                              progress: bool = False,
                              **overrides) -> dict:
    """Generate a synthetic world and convert it (for ``configs/_base_/datasets/synthetic_mv.py``).

    Writes the raw ScanNet layout to ``ROOT/raw`` (only if ``ROOT/raw/synthetic_world.json`` is
    absent) and the converted data to ``ROOT/data`` (resumable), with info files
    ``synthetic_infos_{train,val}.pkl``. Used by the demo and the learning test.

    Args:
        root (str | Path): Working folder.
        num_scenes (int): Rooms. Defaults to 2.
        seed (int): World seed. Defaults to 0.
        preset (str): Generator preset. Defaults to 'tiny'.
        inpaint (bool): Also write inpainted depth. Defaults to False.
        workers (int): Converter processes. Defaults to 1.
        progress (bool): Show the converter's progress bar. Defaults to False.
        **overrides: ``WorldConfig`` overrides.

    Returns:
        dict: ``data_root`` (str), ``ann_files`` (split -> file name), ``raw_root``, ``summary``.
    """
    from .converters.scannet import convert_scannet
    root = Path(root)
    raw = root / 'raw'
    if not (raw / 'synthetic_world.json').is_file():
        generate_world(raw, num_scenes=num_scenes, seed=seed, preset=preset, **overrides)
    data = root / 'data'
    summary = convert_scannet(str(raw), str(data), frame_skip=1, inpaint=inpaint,
                              workers=workers, prefix='synthetic', progress=progress)
    return dict(data_root=str(data), raw_root=str(raw), ann_files=summary['info_files'],
                summary=summary)
