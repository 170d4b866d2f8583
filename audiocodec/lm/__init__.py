"""Autoregressive token LMs over codec tokens: the transformer, its KV cache, samplers, codebook
patterns and the generation loop shared by text-to-speech and text-to-song."""
from .generate import (DecodeStep, ForceFn, Generation, SampleFn, StepState, generate, generate_stream,
                       greedy_sample_fn, hook_generators, is_graph_safe, left_padding_mask)
from .kv_cache import CacheOverflowError, KVCache, LayerKVCache
from .patterns import CodebookPattern, build_pattern_provider, codebook_cross_entropy, delay_pattern_force
from .sampling import (TokenSampler, apply_temperature, classifier_free_guidance, force_eos, greedy, last_tokens,
                       repetition_aware_sample, repetition_penalty, sample, suppress_eos, top_k_filter,
                       top_p_filter)
from .transformer import (CrossAttention, RMSNorm, RotaryEmbedding, SelfAttention, SwiGLU, TransformerBlock,
                          TransformerLM, apply_rotary, attention_mask, swiglu_hidden_dim)

__all__ = ["TransformerLM", "TransformerBlock", "SelfAttention", "CrossAttention", "SwiGLU", "RMSNorm",
           "RotaryEmbedding", "apply_rotary", "attention_mask", "swiglu_hidden_dim",
           "KVCache", "LayerKVCache", "CacheOverflowError",
           "TokenSampler", "greedy", "sample", "apply_temperature", "top_k_filter", "top_p_filter",
           "repetition_penalty", "repetition_aware_sample", "suppress_eos", "force_eos", "last_tokens",
           "classifier_free_guidance",
           "generate", "generate_stream", "DecodeStep", "Generation", "StepState", "SampleFn", "ForceFn",
           "greedy_sample_fn",
           "is_graph_safe", "hook_generators", "delay_pattern_force",
           "left_padding_mask", "CodebookPattern", "build_pattern_provider", "codebook_cross_entropy"]
