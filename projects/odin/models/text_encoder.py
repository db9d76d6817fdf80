"""Frozen RoBERTa text encoder of ODIN's open-vocabulary class head (docs/specification.md §2.9).

The RoBERTa weights and tokenizer are read from ``pretrained``: a local folder (``config.json``,
weights, tokenizer files) or a hub name found in the user's Hugging Face cache. Nothing is ever
downloaded at run time (``local_files_only=True``).
"""
import os.path as osp
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor

from .open_vocab import BACKGROUND_NAME, build_caption, token_class_map

__all__ = ['ODINTextEncoder', 'load_roberta']

_HOW_TO = (
    'Nothing is downloaded at run time. Provide a folder with the RoBERTa config, weights and '
    'tokenizer files, e.g. on a machine with internet run\n'
    '  python -c "from transformers import RobertaModel, RobertaTokenizerFast; '
    "RobertaModel.from_pretrained('roberta-base').save_pretrained('roberta-base'); "
    "RobertaTokenizerFast.from_pretrained('roberta-base').save_pretrained('roberta-base')\"\n"
    'copy the folder here and set '
    'model.decode_head.classifier.text_encoder.pretrained=/path/to/roberta-base '
    '(or put roberta-base in the Hugging Face cache, $HF_HOME / ~/.cache/huggingface).')


def load_roberta(pretrained: str):
    """Load a RoBERTa tokenizer and model (no pooler) without any download.

    Args:
        pretrained: local folder, or a hub name resolved from the Hugging Face cache only.

    Returns:
        tuple: ``(RobertaTokenizerFast, RobertaModel)``.

    Raises:
        FileNotFoundError: neither a usable folder nor a cached hub entry; the message names
            ``pretrained`` and says how to provide the files.
    """
    from transformers import RobertaModel, RobertaTokenizerFast
    from transformers.utils import logging as hf_logging
    where = ('the folder exists but does not hold a loadable tokenizer + model'
             if osp.isdir(str(pretrained)) else
             'no such folder, and no usable entry of that name in the Hugging Face cache')
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "unused pooler weights" etc. are expected
    hf_logging.disable_progress_bar()
    try:
        tokenizer = RobertaTokenizerFast.from_pretrained(pretrained, local_files_only=True)
        model = RobertaModel.from_pretrained(pretrained, local_files_only=True,
                                             add_pooling_layer=False)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f'ODINTextEncoder: cannot load RoBERTa from pretrained={pretrained!r}: {where} '
            f'({type(e).__name__}: {e}). {_HOW_TO}') from e
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    return tokenizer, model


@MODELS.register_module()
class ODINTextEncoder(BaseModule):
    """Frozen RoBERTa + trainable projector and token positional embedding.

    Args:
        pretrained: RoBERTa folder or cached hub name (see :func:`load_roberta`).
        embed_dims: output channels (the decoder's hidden size).
        max_seq_len: maximum caption length in tokens (and size of the token embedding).
        background_name: name of the appended background class.
        separator: text between two class names in the caption.
        init_cfg: unused (kept for the ``BaseModule`` interface; see :meth:`init_weights`).
    """

    def __init__(self,
                 pretrained: str,
                 embed_dims: int = 256,
                 max_seq_len: int = 256,
                 background_name: str = BACKGROUND_NAME,
                 separator: str = '. ',
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.pretrained = pretrained
        self.tokenizer, self.roberta = load_roberta(pretrained)
        self.roberta.requires_grad_(False)
        self.roberta.eval()
        self.max_seq_len = max_seq_len
        self.background_name = background_name
        self.separator = separator
        self.text_projector = nn.Linear(self.roberta.config.hidden_size, embed_dims)
        self.token_pos_embed = nn.Embedding(max_seq_len, embed_dims)
        self._cache: Dict[tuple, Tuple[Tensor, Tensor, Tensor]] = {}

    def train(self, mode: bool = True) -> 'ODINTextEncoder':
        """The frozen RoBERTa always runs in eval mode (no dropout), so its output is cacheable."""
        super().train(mode)
        self.roberta.eval()
        return self

    def init_weights(self) -> None:
        """Keep PyTorch's default init of the projector and token embedding (as officially).

        Deliberately no ``BaseModule`` recursion: it would call the pretrained RoBERTa's own
        ``PreTrainedModel.init_weights`` and re-randomise it.
        """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the frozen output depends on the RoBERTa weights: forget cached encodings
        self._cache.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def tokenize(self, class_names: Sequence[str]) -> Tuple[str, Tensor, Tensor]:
        """Caption, token ids (L,) and token-to-class map (K+1, L) of a vocabulary.

        Raises:
            ValueError: the caption needs more than ``max_seq_len`` tokens (names the classes
                that would be cut off) or a class owns no token.
        """
        names = list(class_names) + [self.background_name]
        caption, spans = build_caption(class_names, self.background_name, self.separator)
        enc = self.tokenizer(caption, return_offsets_mapping=True, truncation=False)
        ids, offsets = enc['input_ids'], enc['offset_mapping']
        if len(ids) > self.max_seq_len:
            # truncation keeps max_seq_len - 1 tokens and </s>; only whitespace/separator
            # tokens may be lost, never (a part of) a class name
            kept = self.max_seq_len - 1
            kept_end = max(e for _, e in offsets[:kept])
            cut = [n for n, (s, e) in zip(names, spans)
                   if s + len(caption[s:e].rstrip()) > kept_end]
            if cut:
                raise ValueError(
                    f'open-vocabulary caption of {len(class_names)} classes needs {len(ids)} '
                    f'tokens > max_seq_len={self.max_seq_len}; class(es) {cut[:10]}'
                    f'{" ..." if len(cut) > 10 else ""} would be cut off. Use fewer or shorter '
                    'class names, or a larger text_encoder.max_seq_len.')
            ids, offsets = ids[:kept] + ids[-1:], offsets[:kept] + offsets[-1:]
        pos_map = token_class_map(offsets, spans, names)
        return caption, torch.as_tensor(ids, dtype=torch.long), pos_map

    @torch.no_grad()
    def encode_frozen(self, class_names: Sequence[str]) -> Tuple[Tensor, Tensor, Tensor]:
        """Frozen RoBERTa output of a vocabulary's caption, cached per vocabulary and device.

        Returns:
            tuple: hidden states (1, L, H), padding mask (1, L) (True = padding) and the
            token-to-class map (K+1, L).
        """
        device = self.text_projector.weight.device
        key = (tuple(str(n) for n in class_names), str(device))
        if key not in self._cache:
            _, ids, pos_map = self.tokenize(class_names)
            ids = ids.to(device)[None]
            attn = torch.ones_like(ids)
            hidden = self.roberta(input_ids=ids, attention_mask=attn).last_hidden_state
            self._cache[key] = (hidden.detach(), attn.eq(0), pos_map.to(device))
        return self._cache[key]

    def forward(self, class_names: Sequence[str], batch_size: int) -> Dict[str, Tensor]:
        """Encode a batch's vocabulary.

        Args:
            class_names: the K class names of the batch, in label order.
            batch_size: B.

        Returns:
            dict: ``feats`` projected tokens (B, L, C), ``pos`` token positional embedding
            (B, L, C), ``pad_mask`` (B, L) (True = padding) and ``pos_map`` the token-to-class
            map (K+1, L) (background last).
        """
        hidden, pad, pos_map = self.encode_frozen(class_names)
        length = hidden.shape[1]
        feats = self.text_projector(hidden)
        pos = self.token_pos_embed.weight[:length][None]
        return dict(feats=feats.expand(batch_size, -1, -1),
                    pos=pos.expand(batch_size, -1, -1),
                    pad_mask=pad.expand(batch_size, -1),
                    pos_map=pos_map)
