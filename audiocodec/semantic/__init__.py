"""Semantic distillation (SpeechTokenizer, DM-Codec): model parts, teachers, and a teacher-feature cache.

* :mod:`.model`: the BiLSTM SEANet encoder, :class:`SemanticRVQ` (RVQ + semantic head) and
  :func:`semantic_forward` (the training forward that returns the student features);
* :mod:`.teachers`: :class:`SpeechTeacher` (HuBERT / wav2vec2) and :class:`LanguageTeacher` (BERT), through
  ``transformers`` (imported only when a teacher is built);
* :mod:`.cache`: :func:`precompute_features` and :class:`FeatureCache`;
* :mod:`.cli`: ``python -m audiocodec.semantic features | transcribed`` (the data stages of the recipes).

The losses are in :mod:`audiocodec.losses.distillation`.
"""
from .cache import FeatureCache, item_id, precompute_features
from .model import (SemanticOutput, SemanticRVQ, SpeechTokenizerDecoder, SpeechTokenizerEncoder, WideBiLSTM,
                    semantic_forward, semantic_rvq)
from .teachers import LanguageTeacher, SpeechTeacher, TeacherOutput, build_teacher, char_vocab

__all__ = ["FeatureCache", "item_id", "precompute_features", "SemanticOutput", "SemanticRVQ",
           "SpeechTokenizerDecoder", "SpeechTokenizerEncoder", "WideBiLSTM", "semantic_forward", "semantic_rvq",
           "LanguageTeacher", "SpeechTeacher", "TeacherOutput", "build_teacher", "char_vocab"]
