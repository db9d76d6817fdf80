"""Class heads of the ODIN decoder: closed-set linear or open-vocabulary (text) classification.

:class:`ODINHead` builds one from ``decode_head.classifier`` and calls the same four methods
whatever the kind, once per batch and once per decoder layer:

* :meth:`BaseClassifier.vocabulary` / :meth:`BaseClassifier.num_classes`: the class names and K of
  a batch (fixed for the linear head, the batch's ``metainfo['classes']`` in open vocabulary);
* :meth:`BaseClassifier.encode`: the batch's class context (None for the linear head, the text
  tokens in open vocabulary), passed back to the two per-layer calls;
* :meth:`BaseClassifier.condition`: the queries before decoder layer i (identity for the linear
  head, a cross-attention to the text tokens in open vocabulary);
* :meth:`BaseClassifier.forward`: class logits ``(B, Q, K + 1)`` of decoder-normed queries, the
  last class being no-object.

The head fills in the decoder's sizes (``embed_dims``, ``num_classes``, ``num_heads``,
``num_layers``); a config names only the type and the type's own options.
"""
from typing import Any, Dict, Optional, Sequence

import torch.nn as nn
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .open_vocab import TextCrossAttentionLayer, open_vocab_class_logits

__all__ = ['BaseClassifier', 'LinearClassifier', 'OpenVocabClassifier']


class BaseClassifier(BaseModule):
    """Interface of a decoder class head (see the module docstring).

    Args:
        embed_dims: query channels C.
        num_classes: K of the configured dataset (the closed-set class count).
        num_heads: attention heads of the decoder.
        num_layers: decoder layers (one :meth:`condition` call before each).
        class_names: default vocabulary (the names of labels 0..K-1), optional.
        init_cfg: mmengine init config.
    """

    #: whether the vocabulary may change from batch to batch (text-based classification)
    open_vocab = False

    def __init__(self, embed_dims: int, num_classes: int, num_heads: int = 8,
                 num_layers: int = 9, class_names: Optional[Sequence[str]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.configured_num_classes = num_classes
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.class_names = tuple(str(n) for n in class_names) if class_names is not None \
            else None

    def vocabulary(self, batch_data_samples: Optional[Sequence]) -> Optional[tuple]:
        """Class names of a batch, or None where the classifier does not know them."""
        return self.class_names

    def num_classes(self, batch_data_samples: Optional[Sequence]) -> int:
        """K of a batch (the logits have K + 1 entries, no-object last)."""
        return self.configured_num_classes

    def encode(self, batch_data_samples: Optional[Sequence], batch_size: int) -> Any:
        """Per-batch class context handed to :meth:`condition` and :meth:`forward`."""
        return None

    def condition(self, layer: int, query: Tensor, query_pos: Tensor, context: Any) -> Tensor:
        """Queries (B, Q, C) before decoder layer ``layer``; identity by default."""
        return query

    def forward(self, decoder_out: Tensor, context: Any) -> Tensor:
        """Class logits (B, Q, K + 1) of decoder-normed queries (B, Q, C)."""
        raise NotImplementedError


@MODELS.register_module()
class LinearClassifier(BaseClassifier):
    """Closed-set class head: ``Linear(C, K + 1)`` (Mask2Former's ``class_embed``).

    Args:
        See :class:`BaseClassifier`.
    """

    def __init__(self, embed_dims: int, num_classes: int, **kwargs) -> None:
        super().__init__(embed_dims, num_classes, **kwargs)
        self.cls_embed = nn.Linear(embed_dims, num_classes + 1)

    def forward(self, decoder_out: Tensor, context: Any = None) -> Tensor:
        """Class logits (B, Q, K + 1) of decoder-normed queries (B, Q, C)."""
        return self.cls_embed(decoder_out)


@MODELS.register_module()
class OpenVocabClassifier(BaseClassifier):
    """Open-vocabulary class head (docs/specification.md §2.9).

    The batch's class names become a caption encoded by a frozen RoBERTa
    (:class:`ODINTextEncoder`); before every decoder layer the queries cross-attend to the text
    tokens; class logits are temperature-scaled cosine similarities of ``cls_embed``
    (Linear C->C) of the queries to the tokens, averaged per class name, with a background
    class as no-object, so K varies per batch.

    Args:
        embed_dims, num_classes, num_heads, num_layers: see :class:`BaseClassifier`.
        text_encoder: config of the text encoder (``type`` defaults to ``ODINTextEncoder``;
            ``pretrained`` = RoBERTa folder or cached hub name; ``embed_dims`` defaults to C).
        temperature: divisor of the cosine similarity. Defaults to 0.07.
        dropout: output dropout of the text cross-attention. Defaults to 0.0.
        class_names: vocabulary used when a batch's data samples carry no
            ``metainfo['classes']``.
        init_cfg: mmengine init config.

    Raises:
        ValueError: no ``text_encoder`` config.
    """

    open_vocab = True

    def __init__(self, embed_dims: int, num_classes: int, num_heads: int = 8,
                 num_layers: int = 9, text_encoder: Optional[dict] = None,
                 temperature: float = 0.07, dropout: float = 0.0,
                 class_names: Optional[Sequence[str]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(embed_dims, num_classes, num_heads, num_layers, class_names, init_cfg)
        enc_cfg = dict(text_encoder or {})
        if not enc_cfg:
            raise ValueError('OpenVocabClassifier needs a text_encoder config, e.g. '
                             "text_encoder=dict(type='ODINTextEncoder', pretrained=PATH)")
        enc_cfg.setdefault('type', 'ODINTextEncoder')
        enc_cfg.setdefault('embed_dims', embed_dims)
        self.temperature = float(temperature)
        self.text_encoder = MODELS.build(enc_cfg)
        self.text_cross_attn_layers = nn.ModuleList([
            TextCrossAttentionLayer(embed_dims, num_heads, float(dropout))
            for _ in range(num_layers)
        ])
        # query -> text-token space
        self.cls_embed = nn.Linear(embed_dims, embed_dims)

    def init_weights(self) -> None:
        """Xavier-uniform text cross-attention; the text encoder keeps its own init."""
        for layer in self.text_cross_attn_layers:
            layer.init_weights()

    def vocabulary(self, batch_data_samples: Optional[Sequence]) -> tuple:
        """Vocabulary of a batch.

        Read from ``metainfo['classes']`` of the data samples (all must agree), else the
        configured ``class_names``.

        Raises:
            ValueError: no vocabulary, or samples with different vocabularies in one batch.
        """
        found = []
        for sample in batch_data_samples or ():
            names = sample.metainfo.get('classes') if hasattr(sample, 'metainfo') else None
            if names is not None:
                found.append(tuple(str(n) for n in names))
        if found:
            if any(f != found[0] for f in found[1:]):
                raise ValueError('open-vocabulary ODINHead: a batch must have ONE vocabulary, '
                                 'but its data samples carry different metainfo["classes"]')
            return found[0]
        if self.class_names is not None:
            return self.class_names
        raise ValueError('open-vocabulary ODINHead needs the class names of the batch: set '
                         'metainfo["classes"] in the data samples (dataset pipeline) or '
                         'model.decode_head.classifier.class_names in the config')

    def num_classes(self, batch_data_samples: Optional[Sequence]) -> int:
        """K of a batch: the size of its vocabulary."""
        return len(self.vocabulary(batch_data_samples))

    def encode(self, batch_data_samples: Optional[Sequence],
               batch_size: int) -> Dict[str, Tensor]:
        """Text tokens of the batch's vocabulary (see :meth:`ODINTextEncoder.forward`)."""
        return self.text_encoder(self.vocabulary(batch_data_samples), batch_size)

    def condition(self, layer: int, query: Tensor, query_pos: Tensor,
                  context: Dict[str, Tensor]) -> Tensor:
        """The queries (B, Q, C) after cross-attending to the text tokens."""
        return self.text_cross_attn_layers[layer](query, query_pos, context['feats'],
                                                  context['pos'], context['pad_mask'])

    def forward(self, decoder_out: Tensor, context: Dict[str, Tensor]) -> Tensor:
        """Class logits (B, Q, K_batch + 1): cosine similarities to the class names' tokens."""
        return open_vocab_class_logits(self.cls_embed(decoder_out), context['feats'],
                                       context['pos_map'], self.temperature)
