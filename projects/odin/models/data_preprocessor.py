"""Data preprocessor of ODIN: multi-view images plus depth, camera poses and intrinsics."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmdet3d.registry import MODELS


@MODELS.register_module()
class ODINDataPreprocessor(Det3DDataPreprocessor):
    """Stack and normalise multi-view RGB-D samples (docs/data_contract.md).

    ``inputs['img']`` (V, 3, H, W) per sample becomes ``imgs`` (B, V, 3, Hp, Wp), normalised and
    zero padded (after normalisation) to a multiple of ``pad_size_divisor``. ``depths`` (V, H, W)
    are padded with 0 to the same size and stacked to (B, V, Hp, Wp); ``cam2world`` and
    ``intrinsics`` are stacked to (B, V, 4, 4); ``points`` and ``superpoints`` stay lists.
    Samples without ``depths`` are single images (2D mode, mmdet's Mask2Former path); they may
    come from mmdet's ``PackDetInputs`` (``inputs`` a plain image tensor). A batch must be all-3D
    or all-2D.

    Args:
        mean: RGB mean (ImageNet, 0-255).
        std: RGB std.
        pad_size_divisor: padding divisor (32).
        **kwargs: other arguments of :class:`Det3DDataPreprocessor`.
    """

    def __init__(self,
                 mean=(123.675, 116.28, 103.53),
                 std=(58.395, 57.12, 57.375),
                 pad_size_divisor: int = 32,
                 **kwargs) -> None:
        kwargs.setdefault('bgr_to_rgb', False)
        super().__init__(mean=mean, std=std, pad_size_divisor=pad_size_divisor, **kwargs)

    def pad_gt_masks(self, batch_data_samples) -> None:
        """Pad 2D instance masks (2D batches only; 3D samples have none)."""
        if all('gt_instances' in s and 'masks' in s.gt_instances for s in batch_data_samples):
            super().pad_gt_masks(batch_data_samples)

    def simple_process(self, data: dict, training: bool = False) -> dict:
        """Normalise/pad images via the parent and stack the RGB-D extras."""
        if not isinstance(data['inputs'], dict):
            # mmdet's PackDetInputs (2D datasets such as COCO): a list of (3, H, W) images
            data = dict(data, inputs=dict(img=list(data['inputs'])))
        inputs = data['inputs']
        depths: Optional[List[torch.Tensor]] = inputs.get('depths')
        if depths is not None and len(depths) != len(inputs['img']):
            raise ValueError('a batch must be all-3D (with depths) or all-2D (without): got '
                             f'{len(depths)} depth stacks for {len(inputs["img"])} samples')
        if 'poses' in inputs and 'cam2world' not in inputs:
            raise KeyError('inputs["poses"] is now called inputs["cam2world"] (camera-to-world, '
                           '(V, 4, 4) per sample; docs/data_contract.md)')
        extras = {k: inputs[k] for k in ('depths', 'cam2world', 'intrinsics', 'superpoints')
                  if inputs.get(k) is not None}
        out = super().simple_process(data, training)
        if not extras:
            return out
        extras = self.cast_data(extras)
        batch_inputs = out['inputs']
        if 'depths' in extras:
            hp, wp = batch_inputs['imgs'].shape[-2:]
            padded = []
            for i, d in enumerate(extras['depths']):
                if d.dim() != 3:
                    raise ValueError(f'sample {i}: depths must be (V, H, W), got {tuple(d.shape)}')
                padded.append(F.pad(d.float(), (0, wp - d.shape[-1], 0, hp - d.shape[-2])))
            batch_inputs['depths'] = torch.stack(padded)
            for key in ('cam2world', 'intrinsics'):
                if key not in extras:
                    raise KeyError(f'3D sample without inputs["{key}"]')
                batch_inputs[key] = torch.stack([x.float() for x in extras[key]])
        if 'superpoints' in extras:
            batch_inputs['superpoints'] = list(extras['superpoints'])
        return out
