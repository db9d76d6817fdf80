"""The demo's figure: the instance cloud beside a grid of view overlays (README, ``make demo``)."""
import glob
import os
import os.path as osp
from typing import Optional, Tuple

import cv2
import numpy as np

from projects.odin.visualization.render import read_instance_ply, render_points


def render_demo_figure(demo_dir: str, out_path: str, size: Tuple[int, int] = (300, 400),
                       cut_above: Optional[float] = 0.8, num_views: int = 4) -> str:
    """Compose the demo's result into one PNG: the instance cloud beside a grid of view overlays.

    Args:
        demo_dir: output folder of ``demo/odin_demo.py`` (``*_instances.ply``, ``views/``).
        out_path: PNG to write.
        size: (H, W) of the cloud panel; the view grid has the same height. Defaults to
            (300, 400).
        cut_above: drop points above this fraction of the cloud's height (z up) so that the
            ceiling does not hide the room; None keeps all. Defaults to 0.8.
        num_views: overlays shown, evenly spread over the recording, in a 2-row grid (1: one
            large view). Defaults to 4.

    Returns:
        ``out_path``.

    Raises:
        FileNotFoundError: the folder has no ``*_instances.ply``.
    """
    plys = sorted(glob.glob(osp.join(demo_dir, '*_instances.ply')))
    if not plys:
        raise FileNotFoundError(f'{demo_dir}: no *_instances.ply (run demo/odin_demo.py first)')
    xyz, rgb, _ = read_instance_ply(plys[0])
    if cut_above is not None and len(xyz):
        lo, hi = np.percentile(xyz[:, 2], 1), np.percentile(xyz[:, 2], 99)
        keep = xyz[:, 2] <= lo + cut_above * (hi - lo)
        xyz, rgb = xyz[keep], rgb[keep]
    panels = [render_points(xyz, rgb, size=size)]
    views = sorted(glob.glob(osp.join(demo_dir, 'views', '*.png')))
    if views and num_views > 0:
        n = min(num_views, len(views))
        picks = [views[int(round(i * (len(views) - 1) / max(1, n - 1)))] if n > 1
                 else views[len(views) // 2] for i in range(n)]
        rows = 1 if n == 1 else 2
        cell_h = (size[0] - 4 * (rows - 1)) // rows
        cells = []
        for path in picks:
            img = cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1]
            scale = cell_h / img.shape[0]
            cells.append(cv2.resize(img, (int(round(img.shape[1] * scale)), cell_h),
                                    interpolation=cv2.INTER_NEAREST))
        cols = -(-n // rows)
        cell_w = max(c.shape[1] for c in cells)
        grid = np.full((size[0], cols * cell_w + 4 * (cols - 1), 3), 255, np.uint8)
        for k, cell in enumerate(cells):
            r, c = divmod(k, cols)
            y, x = r * (cell_h + 4), c * (cell_w + 4)
            grid[y:y + cell_h, x:x + cell.shape[1]] = cell
        panels.append(np.full((size[0], 8, 3), 255, np.uint8))
        panels.append(grid)
    fig = np.concatenate(panels, 1)
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    cv2.imwrite(out_path, fig[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out_path


__all__ = ['render_demo_figure']
