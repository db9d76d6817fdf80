"""Per-scene visualisation of ODIN's 3D instance predictions (``tools/test.py --show-dir``).

mmdet3d's ``Det3DVisualizationHook`` draws 3D boxes or per-point semantic labels through
``Det3DLocalVisualizer`` (open3d); ODIN predicts overlapping instance masks over a scene's points
(``pred_pts_seg.pts_instance_mask`` (K, N)), which it cannot draw. :class:`ODINVisualizationHook`
takes its place (same arguments as far as they apply) and writes, per test scene, into
``work_dir/<timestamp>/<test_out_dir>`` (or ``test_out_dir`` itself when absolute):

* ``<scene>/pred_instances.ply`` and ``<scene>/gt_instances.ply``: the scene's points coloured
  by instance (``instance``/``label`` vertex properties);
* ``<scene>/render.png``: predicted | ground-truth instances rendered from above a corner;
* ``<scene>/views/<frame>.png``: each drawn view with predicted | ground-truth instances overlaid
  (the view's depth pixels take the instance of the nearest scene point within 5 cm);
* ``<scene>/instances.json``: the drawn predictions (class, score, point count).
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
from mmdet3d.registry import HOOKS
from mmengine.hooks import Hook

from projects.odin.datasets.recordings import unproject_frame
from projects.odin.ops import knn
from projects.odin.visualization import (
    default_view,
    instance_palette,
    masks_to_instance_ids,
    overlay_instances,
    render_points,
    write_instance_ply,
    write_instances_json,
)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@HOOKS.register_module()
class ODINVisualizationHook(Hook):
    """Write PLYs and images of ODIN's 3D instance predictions during testing.

    Args:
        draw: whether to draw at all (``tools/test.py --show-dir`` switches it on).
        interval: draw every ``interval``-th test sample (1 = all). Defaults to 1.
        score_thr: predictions below this score are not drawn. Defaults to 0.3.
        min_points: predictions with fewer points are not drawn. Defaults to 1.
        max_views: at most this many views (uniformly spread) get overlays. Defaults to 4.
        show: accepted for compatibility with ``tools/test.py --show``; there is no window on a
            server, so it only logs where the files are.
        wait_time: accepted for compatibility; unused.
        test_out_dir: output folder, relative to ``work_dir/<timestamp>`` unless absolute.
        draw_gt: also write the ground truth. Defaults to True.
        draw_val: also draw during validation (into ``work_dir/<timestamp>/vis_val``).
            Defaults to False.
        class_names: class names for the JSON; default: the dataset's ``classes``.
    """

    priority = 'NORMAL'

    def __init__(self,
                 draw: bool = False,
                 interval: int = 1,
                 score_thr: float = 0.3,
                 min_points: int = 1,
                 max_views: int = 4,
                 show: bool = False,
                 wait_time: float = 0.,
                 test_out_dir: Optional[str] = None,
                 draw_gt: bool = True,
                 draw_val: bool = False,
                 class_names: Optional[Sequence[str]] = None,
                 **kwargs) -> None:
        self.draw = draw
        self.interval = max(1, int(interval))
        self.score_thr = score_thr
        self.min_points = min_points
        self.max_views = max_views
        self.show = show
        self.wait_time = wait_time
        self.test_out_dir = test_out_dir
        self.draw_gt = draw_gt
        self.draw_val = draw_val
        self.class_names = list(class_names) if class_names is not None else None
        self._index = 0
        self._out_dir: Optional[str] = None

    # ------------------------------------------------------------------ hook points
    def before_test(self, runner) -> None:
        """Resolve the output folder."""
        self._index = 0
        if self.draw:
            sub = self.test_out_dir or 'vis'
            self._out_dir = sub if osp.isabs(sub) else osp.join(runner.work_dir, runner.timestamp,
                                                                 sub)
            os.makedirs(self._out_dir, exist_ok=True)

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        """Draw every sample of the batch (every ``interval``-th)."""
        if not self.draw:
            return
        self._draw_batch(runner, data_batch, outputs, self._out_dir)

    def after_test(self, runner) -> None:
        """Say where the visualisations are."""
        if self.draw and self._out_dir is not None:
            runner.logger.info(f'ODIN visualisations of {self._index} scenes in {self._out_dir}')

    def after_val_iter(self, runner, batch_idx: int, data_batch: dict,
                       outputs: Sequence) -> None:
        """Draw during validation too when ``draw_val``."""
        if self.draw and self.draw_val:
            out = osp.join(runner.work_dir, runner.timestamp, 'vis_val', f'iter_{runner.iter}')
            self._draw_batch(runner, data_batch, outputs, out)

    # ------------------------------------------------------------------ drawing
    def _draw_batch(self, runner, data_batch: dict, outputs: Sequence, out_dir: str) -> None:
        names = self.class_names
        if names is None:
            meta = getattr(runner.test_loop.dataloader.dataset, 'metainfo', None) or {}
            names = list(meta.get('classes', ()))
        inputs = data_batch.get('inputs', {})
        for i, sample in enumerate(outputs):
            index = self._index
            self._index += 1
            if index % self.interval:
                continue
            if 'pred_pts_seg' not in sample or inputs.get('points') is None:
                continue
            per_sample = {k: (v[i] if isinstance(v, (list, tuple)) else None)
                          for k, v in inputs.items()}
            self.draw_sample(sample, per_sample, out_dir, names)

    def draw_sample(self, sample, inputs: dict, out_dir: str,
                    class_names: Sequence[str]) -> List[str]:
        """Write the files of one scene.

        Args:
            sample: ``Det3DDataSample`` with ``pred_pts_seg`` (and ``eval_ann_info`` for GT).
            inputs: the sample's packed inputs (``points`` (N, 3+C), optionally ``img``
                (V, 3, H, W), ``depths`` (V, H, W), ``cam2world``, ``intrinsics``).
            out_dir: root output folder.
            class_names: names of the training classes.

        Returns:
            The written file paths.
        """
        meta = sample.metainfo
        scene = str(meta.get('scene_id', meta.get('sample_idx', f'sample_{self._index}')))
        scene_dir = osp.join(out_dir, scene)
        os.makedirs(scene_dir, exist_ok=True)
        points = _np(inputs['points']).astype(np.float32)
        xyz = points[:, :3]
        rgb = None
        if points.shape[1] >= 6:
            scale = 255.0 if points[:, 3:6].max(initial=0) <= 1.0 + 1e-6 else 1.0
            rgb = np.clip(points[:, 3:6] * scale, 0, 255).round().astype(np.uint8)
        pred = sample.pred_pts_seg
        masks = _np(pred.pts_instance_mask).astype(bool).reshape(-1, len(xyz))
        labels = _np(pred.instance_labels).astype(np.int64).reshape(-1)
        scores = _np(pred.instance_scores).astype(np.float64).reshape(-1)
        keep = (scores >= self.score_thr) & (masks.sum(1) >= self.min_points)
        masks, labels, scores = masks[keep], labels[keep], scores[keep]
        pred_ids = masks_to_instance_ids(masks, scores)
        pred_labels = np.full(len(pred_ids), -1, np.int64)
        pred_labels[pred_ids >= 0] = labels[pred_ids[pred_ids >= 0]]
        written = [osp.join(scene_dir, 'pred_instances.ply')]
        write_instance_ply(written[-1], xyz, pred_ids, rgb=rgb, labels=pred_labels)
        names = list(class_names) or [str(c) for c in range(int(labels.max(initial=0)) + 1)]
        written.append(osp.join(scene_dir, 'instances.json'))
        write_instances_json(written[-1], labels, scores, masks.sum(1),
                             [names[c] if c < len(names) else str(c) for c in
                              range(max(len(names), int(labels.max(initial=-1)) + 1))],
                             extra=dict(scene=scene, num_points=int(len(xyz)),
                                        score_thr=self.score_thr))
        gt_ids = None
        ann = sample.get('eval_ann_info', None) if hasattr(sample, 'get') else None
        if self.draw_gt and ann is not None and ann.get('pts_instance_mask') is not None:
            gt_inst = np.asarray(ann['pts_instance_mask']).astype(np.int64)
            if len(gt_inst) == len(xyz):
                _, gt_ids = np.unique(gt_inst, return_inverse=True)
                gt_ids = np.where(gt_inst >= 0, gt_ids - int((gt_inst < 0).any()), -1)
                sem = ann.get('pts_semantic_mask')
                written.append(osp.join(scene_dir, 'gt_instances.ply'))
                write_instance_ply(written[-1], xyz, gt_ids, rgb=rgb,
                                   labels=None if sem is None else np.asarray(sem))
        written.append(osp.join(scene_dir, 'render.png'))
        self._render(xyz, rgb, pred_ids, gt_ids, written[-1])
        written += self._draw_views(inputs, meta, xyz, pred_ids, gt_ids, scene_dir)
        return written

    @staticmethod
    def _colour(ids: np.ndarray, rgb: Optional[np.ndarray]) -> np.ndarray:
        base = (np.full((len(ids), 3), 160, np.uint8) if rgb is None else
                (rgb.astype(np.float32) * 0.5 + 60).astype(np.uint8))
        if len(ids) and ids.max() >= 0:
            pal = instance_palette(int(ids.max()) + 1)
            base[ids >= 0] = pal[ids[ids >= 0]]
        return base

    def _render(self, xyz, rgb, pred_ids, gt_ids, path: str) -> None:
        keep = np.ones(len(xyz), bool)
        if len(xyz):  # cut the ceiling away (z up, as ScanNet and the converted datasets)
            lo, hi = np.percentile(xyz[:, 2], 1), np.percentile(xyz[:, 2], 99)
            keep = xyz[:, 2] <= lo + 0.8 * (hi - lo)
        view = default_view(xyz[keep]) if keep.any() else None
        panels = [render_points(xyz[keep], self._colour(pred_ids, rgb)[keep], (240, 320), view)]
        if gt_ids is not None:
            panels += [np.full((240, 6, 3), 255, np.uint8),
                       render_points(xyz[keep], self._colour(gt_ids, rgb)[keep], (240, 320),
                                     view)]
        cv2.imwrite(path, np.concatenate(panels, 1)[:, :, ::-1])

    def _draw_views(self, inputs, meta, xyz, pred_ids, gt_ids, scene_dir) -> List[str]:
        imgs, depths = inputs.get('img'), inputs.get('depths')
        cam2world, intrs = inputs.get('cam2world'), inputs.get('intrinsics')
        if any(x is None for x in (imgs, depths, cam2world, intrs)) or len(xyz) == 0:
            return []
        imgs, depths = _np(imgs), _np(depths).astype(np.float64)
        cam2world, intrs = _np(cam2world).astype(np.float64), _np(intrs).astype(np.float64)
        num_views = len(imgs)
        sel = np.unique(np.linspace(0, num_views - 1, min(self.max_views, num_views)).round()
                        .astype(int))
        frame_ids = meta.get('frame_ids') or [f'{v:03d}' for v in range(num_views)]
        os.makedirs(osp.join(scene_dir, 'views'), exist_ok=True)
        support = torch.from_numpy(xyz.astype(np.float32))
        written = []
        for v in sel:
            img = imgs[v].transpose(1, 2, 0).astype(np.uint8)
            depth = depths[v]
            world = unproject_frame(depth, intrs[v], cam2world[v]).reshape(-1, 3)
            valid = depth.reshape(-1) > 0
            nearest = np.full(len(world), -1, np.int64)
            if valid.any():
                q = torch.from_numpy(world[valid].astype(np.float32))
                idx, dist = knn(q, support, 1, torch.tensor([len(q)]), torch.tensor([len(support)]))
                near = _np(idx[:, 0])
                near[_np(dist[:, 0]) > 0.05] = -1
                nearest[valid] = near
            h, w = depth.shape
            panels = []
            for ids in (pred_ids, gt_ids):
                if ids is None:
                    continue
                pix = np.where(nearest >= 0, ids[np.maximum(nearest, 0)], -1).reshape(h, w)
                panels.append(overlay_instances(img[:h, :w], pix))
                panels.append(np.full((h, 4, 3), 255, np.uint8))
            name = str(frame_ids[v]) if v < len(frame_ids) else f'{v:03d}'
            written.append(osp.join(scene_dir, 'views', f'{name}.png'))
            cv2.imwrite(written[-1], np.concatenate(panels[:-1], 1)[:, :, ::-1])
        return written


__all__ = ['ODINVisualizationHook']
