"""The "where to add ..." recipes of docs/architecture.md, each tried with a toy component.

Every test registers a toy X exactly as the page says (the registry, the interface, the config
key) and runs it through the real code: a fusion layer in a tiny ODIN's forward, a place to
predict masks in its inference, a metric on a prediction, a dataset loaded through the dataset
class. If the page and the code drift apart, one of these fails.
"""
import copy
import pickle

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.registry import init_default_scope
from torch import Tensor, nn

import projects.odin  # noqa: F401  (registers the ODIN components)
from odin_testing import REPO_ROOT, create_odin_inputs

CFG = f'{REPO_ROOT}/configs/odin/odin_tiny_test.py'

pytestmark = pytest.mark.usefixtures('one_thread')
init_default_scope('mmdet3d')


def _tiny_model_cfg() -> Config:
    return copy.deepcopy(Config.fromfile(CFG).model)


def _build(model_cfg) -> nn.Module:
    from mmdet3d.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _predict(model, data) -> list:
    model.eval()
    with torch.no_grad():
        return model(**model.data_preprocessor(data, False), mode='predict')


# --------------------------------------------------------------------------- a 3D fusion layer
class ToyMeanFusion(nn.Module):
    """Toy fusion layer: each voxel adds a projection of the mean of its k neighbours.

    The interface of docs/architecture.md: ``__init__(embed_dims, num_layers)``,
    ``forward(voxel_feats (N, C), voxel_xyz (N, 3), neighbor_idx (N, k)) -> (N, C)``.
    """

    calls = 0

    def __init__(self, embed_dims: int, num_layers: int = 1) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(embed_dims, embed_dims) for _ in range(num_layers))

    def forward(self, voxel_feats: Tensor, voxel_xyz: Tensor, neighbor_idx: Tensor) -> Tensor:
        assert voxel_feats.shape[0] == voxel_xyz.shape[0] == neighbor_idx.shape[0]
        ToyMeanFusion.calls += 1
        x = voxel_feats
        for proj in self.proj:
            x = x + proj(x[neighbor_idx].mean(1))
        return x


def test_recipe_fusion_layer():
    from mmdet3d.registry import MODELS
    MODELS.register_module(module=ToyMeanFusion, force=True)
    cfg = _tiny_model_cfg()
    # the config keys the page names; the backbone block keeps its own projection width/groups
    cfg.backbone.fusion_cfg = dict(type='ToyMeanFusion', embed_dims=32, num_groups=8)
    cfg.decode_head.pixel_decoder.level_fusion_cfg = dict(type='ToyMeanFusion', num_layers=1)
    model = _build(cfg)
    assert all(isinstance(b.attn, ToyMeanFusion) for b in model.backbone.fusion_blocks)
    assert all(isinstance(f, ToyMeanFusion)
               for f in model.decode_head.pixel_decoder.fusion_blocks)
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=120)
    ToyMeanFusion.calls = 0
    model.train()
    losses = model(**model.data_preprocessor(copy.deepcopy(data), True), mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    # 3 backbone blocks + 3 pixel-decoder levels, each once per forward
    assert ToyMeanFusion.calls == 6
    assert torch.isfinite(total)
    grad = model.backbone.fusion_blocks[0].attn.proj[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    out = _predict(model, data)
    assert out[0].pred_pts_seg.pts_semantic_mask.shape == (120, )


def test_recipe_fusion_layer_full_example(tmp_path):
    """The page's full example, selected in a config that imports its module (custom_imports)."""
    from projects.odin.parity.cross_view_reference import NaiveCrossViewAttention
    cfg_file = tmp_path / 'naive_fusion.py'
    cfg_file.write_text(
        f"_base_ = ['{CFG}']\n"
        "custom_imports = dict(imports=['projects.odin',\n"
        "                               'projects.odin.parity.cross_view_reference'],\n"
        "                      allow_failed_imports=False)\n"
        "model = dict(backbone=dict(fusion_cfg=dict(type='NaiveCrossViewAttention')),\n"
        "             decode_head=dict(pixel_decoder=dict(\n"
        "                 level_fusion_cfg=dict(type='NaiveCrossViewAttention'))))\n")
    model = _build(Config.fromfile(str(cfg_file)).model)
    assert all(isinstance(b.attn, NaiveCrossViewAttention) for b in model.backbone.fusion_blocks)
    assert all(isinstance(f, NaiveCrossViewAttention)
               for f in model.decode_head.pixel_decoder.fusion_blocks)
    out = _predict(model, create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=60))
    assert out[0].pred_pts_seg.pts_semantic_mask.shape == (60, )


# --------------------------------------------------------------------------- a place to predict
def _toy_point_set_classes():
    """A toy PredictionPointSet: masks on the res2 voxels, lifted to the input points by the
    nearest voxel (k = 1) instead of IDW."""
    from mmdet3d.registry import TASK_UTILS

    from projects.odin.models.prediction_points import SensorPointSet
    from projects.odin.ops.utils import scene_ranges
    from projects.odin.structures import neighbors

    class NearestVoxelPointSet(SensorPointSet):
        lifted = 0

        def lift_logits(self, b: int, logits: Tensor) -> Tensor:
            res2 = self.geometry[0]
            s, e = scene_ranges(res2.voxel_offsets)[b]
            pts = self.input_points[b][:, :3].float()
            idx, _ = neighbors.knn(pts, res2.voxel_xyz[s:e], 1, pts.new_tensor([len(pts)]).long(),
                                   pts.new_tensor([e - s]).long())
            NearestVoxelPointSet.lifted += 1
            return logits[:, idx[:, 0]]

    class NearestVoxelPointsBuilder:
        def __call__(self, batch_inputs: dict, geometry, training: bool):
            return NearestVoxelPointSet(geometry, batch_inputs.get('points'))

    TASK_UTILS.register_module(module=NearestVoxelPointsBuilder, force=True)
    return NearestVoxelPointSet


def test_recipe_prediction_points():
    point_set = _toy_point_set_classes()
    cfg = _tiny_model_cfg()
    cfg.prediction_points = dict(type='NearestVoxelPointsBuilder')
    model = _build(cfg)
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=90,
                              num_superpoints=None)
    point_set.lifted = 0
    pred = _predict(model, data)[0].pred_pts_seg
    assert point_set.lifted == 1
    assert pred.pts_instance_mask.shape == (10, 90)
    assert pred.pts_semantic_mask.shape == (90, )
    # the toy set also gives training targets (inherited build_targets)
    model.train()
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(losses['loss_mask']) and losses['loss_mask'] > 0


# --------------------------------------------------------------------------- a metric
class ToyPointAccuracy(BaseMetric):
    """Toy metric: fraction of labelled points whose predicted semantic class is right."""

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            pred = sample['pred_pts_seg']['pts_semantic_mask'].cpu().numpy()
            gt = np.asarray(sample['eval_ann_info']['pts_semantic_mask'])
            valid = gt < len(self.dataset_meta['classes'])
            self.results.append((int((pred[valid] == gt[valid]).sum()), int(valid.sum())))

    def compute_metrics(self, results: list) -> dict:
        right = sum(r for r, _ in results)
        total = sum(n for _, n in results)
        return dict(point_acc=right / max(total, 1))


def test_recipe_metric():
    from mmdet3d.registry import METRICS
    from mmengine.evaluator import Evaluator
    METRICS.register_module(module=ToyPointAccuracy, force=True)
    model = _build(_tiny_model_cfg())
    data = create_odin_inputs(num_views=2, img_hw=(32, 32), num_points=100)
    sample = _predict(model, data)[0]
    pred = sample.pred_pts_seg.pts_semantic_mask.numpy()
    gt = pred.copy()
    gt[:25] = (pred[:25] + 1) % 4  # 25 wrong
    gt[25:35] = 4  # 10 unlabelled (ignore index = number of classes)
    sample.eval_ann_info = dict(pts_semantic_mask=gt)
    evaluator = Evaluator(dict(type='ToyPointAccuracy'))  # as val_evaluator / test_evaluator
    evaluator.dataset_meta = dict(classes=('a', 'b', 'c', 'd'))
    evaluator.process([sample.to_dict()])
    assert evaluator.evaluate(1) == {'point_acc': pytest.approx(65 / 90)}


# --------------------------------------------------------------------------- a dataset
TOY_METAINFO = dict(classes=('box', 'ball'), seg_valid_class_ids=(3, 7),
                    seg_all_class_ids=(1, 3, 7), palette=[(255, 0, 0), (0, 0, 255)])


def convert_toy_rooms(out_dir, num_frames: int = 3, num_points: int = 200) -> None:
    """Toy converter: one room with the files and info of docs/data.md §2 (no superpoints)."""
    rng = np.random.RandomState(0)
    for sub in ('points', 'semantic_mask', 'instance_mask', 'frames'):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    xyz = rng.uniform(0, 2, (num_points, 3))
    rgb = rng.randint(0, 255, (num_points, 3))
    np.concatenate([xyz, rgb], 1).astype(np.float32).tofile(out_dir / 'points/room0.bin')
    semantic = np.where(xyz[:, 0] < 1, 3, 7)
    semantic[:10] = 1  # raw id 1: not a class -> ignore index
    semantic.astype(np.int64).tofile(out_dir / 'semantic_mask/room0.bin')
    (xyz[:, 1] > 1).astype(np.int64).tofile(out_dir / 'instance_mask/room0.bin')
    h, w = 24, 32
    cam2img = np.eye(4)
    cam2img[0, 0] = cam2img[1, 1] = 20.0
    cam2img[0, 2], cam2img[1, 2] = (w - 1) / 2, (h - 1) / 2
    images = {}
    for f in range(num_frames):
        cv2.imwrite(str(out_dir / f'frames/{f}.jpg'), rng.randint(0, 255, (h, w, 3), np.uint8))
        cv2.imwrite(str(out_dir / f'frames/{f}.png'), np.full((h, w), 1500 + 100 * f, np.uint16))
        pose = np.eye(4)
        pose[:3, 3] = (0.1 * f, 0.0, 0.0)
        images[f'{f:06d}'] = dict(img_path=f'frames/{f}.jpg', depth_map=f'frames/{f}.png',
                                  height=h, width=w, cam2img=cam2img.tolist(),
                                  cam2world=pose.tolist())
    info = dict(sample_idx='room0', lidar_points=dict(num_pts_feats=6,
                                                       lidar_path='points/room0.bin'),
                pts_semantic_mask_path='semantic_mask/room0.bin',
                pts_instance_mask_path='instance_mask/room0.bin',
                num_points=num_points, depth_scale=1000.0, images=images)
    meta = dict(dataset='toy_rooms', info_version='1.1', split='val', label_space='toy',
                depth_scale=1000.0)
    with open(out_dir / 'toy_infos_val.pkl', 'wb') as f:
        pickle.dump(dict(metainfo=meta, data_list=[info]), f)


def test_recipe_dataset(tmp_path):
    from mmdet3d.registry import DATASETS

    from projects.odin.datasets.multiview_datasets import ODINScanNetDataset

    @DATASETS.register_module(name='ODINToyRoomsDataset', force=True)
    class ODINToyRoomsDataset(ODINScanNetDataset):
        METAINFO = TOY_METAINFO

    convert_toy_rooms(tmp_path)
    # configs/_base_/datasets/<name>_mv.py: the synthetic (ScanNet) test pipeline without
    # superpoints, another dataset type
    base = Config.fromfile(f'{REPO_ROOT}/configs/_base_/datasets/synthetic_mv.py')
    pipeline = [t for t in base.test_pipeline if t.type != 'LoadODINSuperpoints']
    ds = DATASETS.build(dict(type='ODINToyRoomsDataset', data_root=str(tmp_path),
                             ann_file='toy_infos_val.pkl', pipeline=pipeline, test_mode=True))
    assert len(ds) == 1 and tuple(ds.metainfo['classes']) == ('box', 'ball')
    item = ds[0]
    inp = item['inputs']
    assert inp['img'].shape[0] == inp['depths'].shape[0] == 3
    assert inp['points'].shape == (200, 6)
    assert torch.allclose(inp['depths'][2].max(), torch.tensor(1.7))
    sem = np.asarray(item['data_samples'].eval_ann_info['pts_semantic_mask'])
    raw = np.fromfile(tmp_path / 'semantic_mask/room0.bin', np.int64)
    expected = np.select([raw == 3, raw == 7], [0, 1], default=2)  # ignore index = 2 classes
    assert np.array_equal(sem, expected)
