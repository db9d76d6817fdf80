"""Data preprocessor of ODIN: multi-view images plus depth, camera poses and intrinsics."""
import math
from typing import List, Optional

import torch
from mmdet.models.utils.misc import samplelist_boxtype2tensor
from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmdet3d.registry import MODELS

from ..structures.multiview_depths import MultiViewDepths
from ..structures.multiview_images import MultiViewImages


@MODELS.register_module()
class ODINDataPreprocessor(Det3DDataPreprocessor):
    """Stack and normalise multi-view RGB-D samples (docs/data_contract.md).

    ``inputs['img']`` (V, 3, H, W) per sample becomes ``imgs``, a
    :class:`~projects.odin.structures.MultiViewImages` of (B, V, 3, Hp, Wp): the images stay in
    their loaded dtype (uint8), zero padded to a multiple of ``pad_size_divisor``, and the model
    normalises and pads them a view chunk at a time (``MultiViewImages.normalized``, the values
    of normalising the whole batch here; ``to_tensor()`` gives all of them). ``depths`` (V, H, W)
    become a :class:`~projects.odin.structures.MultiViewDepths` of (B, V, Hp, Wp): every
    sample's depth maps as given (not stacked, padded or converted), made float32 and zero
    padded a view chunk at a time where the model unprojects them (``to_tensor()`` gives the
    padded float32 tensor of all views); ``cam2world`` and
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
        if depths is None:
            out = super().simple_process(data, training)
        else:
            out = self._process_3d(data, training)
        if not extras:
            return out
        extras = self.cast_data(extras)
        batch_inputs = out['inputs']
        if 'depths' in extras:
            # kept as given (no stacking, padding or float copy of all views): the model makes
            # a chunk of views float32 where it unprojects them (MultiViewDepths.region)
            batch_inputs['depths'] = MultiViewDepths(extras['depths'],
                                                     batch_inputs['imgs'].shape[-2:])
            for key in ('cam2world', 'intrinsics'):
                if key not in extras:
                    raise KeyError(f'3D sample without inputs["{key}"]')
                batch_inputs[key] = torch.stack([x.float() for x in extras[key]])
        if 'superpoints' in extras:
            batch_inputs['superpoints'] = list(extras['superpoints'])
        return out

    def _process_3d(self, data: dict, training: bool) -> dict:
        """The parent's processing of a 3D batch, with the images kept as loaded.

        The points and data samples go through :class:`Det3DDataPreprocessor` (without the
        images); the images become a :class:`MultiViewImages` (channel order converted, zero
        padded, not normalised) and the samples get the parent's ``batch_input_shape`` and
        ``pad_shape``.
        """
        if training and self.batch_augments is not None:
            raise ValueError('batch_augments act on normalised image tensors; 3D batches are '
                             'normalised per view chunk by the model and take none')
        images = data['inputs'].get('img')
        if not isinstance(images, (list, tuple)) or not all(
                isinstance(x, torch.Tensor) and x.dim() == 4 for x in images):
            raise ValueError('a 3D batch needs inputs["img"] as a list of (V, 3, H, W) tensors '
                             '(one per sample)')
        rest = dict(data, inputs={k: v for k, v in data['inputs'].items() if k != 'img'})
        out = super().simple_process(rest, training)
        images = [self.cast_data(x) for x in images]
        if self._channel_conversion:
            images = [x[:, [2, 1, 0]] for x in images]
        norm = dict(mean=self.mean, std=self.std) if self._enable_normalize else {}
        imgs = MultiViewImages.stack(images, self.pad_size_divisor, pad_value=self.pad_value,
                                     **norm)
        samples = out['data_samples']
        if samples is not None:
            div = max(int(self.pad_size_divisor), 1)
            for sample, img in zip(samples, images):
                pad_shape = tuple(math.ceil(x / div) * div for x in img.shape[-2:])
                sample.set_metainfo({'batch_input_shape': tuple(imgs.shape[-2:]),
                                     'pad_shape': pad_shape})
            if self.boxtype2tensor:
                samplelist_boxtype2tensor(samples)
            if self.pad_seg:
                self.pad_gt_sem_seg(samples)
        out['inputs']['imgs'] = imgs
        return out
