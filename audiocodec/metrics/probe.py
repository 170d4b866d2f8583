"""A linear probe of what a codec's tokens say about the words (or phones) spoken, with no external model.

For each utterance: the bag of its first-codebook tokens (counts over the codebook, normalised) is the
input; the multi-hot set of the words (or espeak-ng phones) of its transcript is the target. A linear
classifier (logistic regression, one output per label) is fitted on a training manifest and scored on a
held-out one: micro-F1 and mean average precision. Tokens that carry phonetic content (semantic
distillation) score higher than purely acoustic ones; random tokens score near the label frequencies.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError


def bag_of_tokens(tokens: Sequence[torch.Tensor], cardinality: int) -> torch.Tensor:
    """``[N, cardinality]``: each item's first-codebook token histogram (``tokens[i]``: ``[K, T]`` or ``[T]``),
    normalised to sum 1."""
    rows = []
    for t in tokens:
        first = t[0] if t.dim() == 2 else t
        h = torch.bincount(first.long().flatten(), minlength=cardinality)[:cardinality].float()
        rows.append(h / h.sum().clamp(min=1))
    return torch.stack(rows)


def word_labels(text: str) -> list[str]:
    return ["".join(c for c in w.lower() if c.isalpha() or c == "'") for w in text.split() if any(c.isalpha() for c in w)]


def label_matrix(label_sets: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> torch.Tensor:
    index = {w: i for i, w in enumerate(vocabulary)}
    y = torch.zeros(len(label_sets), len(vocabulary))
    for n, labels in enumerate(label_sets):
        for w in labels:
            if w in index:
                y[n, index[w]] = 1.0
    return y


def _average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    order = np.argsort(-scores)
    hits = truth[order]
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / (np.arange(len(hits)) + 1)
    return float((precision * hits).sum() / hits.sum())


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 steps: int = 300, lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0) -> dict:
    """Fit logistic regression ``train_x [N, F] -> train_y [N, L]`` (multi-hot) and score it on the test set.

    Features are standardised with the training statistics. Returns ``{"micro_f1", "map",
    "label_frequency_f1"}``; the last is the micro-F1 of predicting each label by its training frequency
    alone (a floor to compare with)."""
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0] or train_y.shape[1] != test_y.shape[1]:
        raise ConfigError(f"probe: shapes do not agree: {tuple(train_x.shape)}, {tuple(train_y.shape)}, "
                          f"{tuple(test_x.shape)}, {tuple(test_y.shape)}")
    if train_y.shape[1] == 0:
        raise ConfigError("probe: no label occurs often enough in the training set")
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(xs.shape[1], train_y.shape[1], generator=g) * 0.01).requires_grad_()
    b = torch.zeros(train_y.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xs @ w + b, train_y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = torch.sigmoid(xt @ w + b).numpy()
    truth = test_y.numpy()

    def micro_f1(pred: np.ndarray) -> float:
        tp = float((pred * truth).sum())
        return 2 * tp / max(float(pred.sum() + truth.sum()), 1e-9)

    prior = train_y.mean(0).numpy()
    aps = [_average_precision(scores[:, j], truth[:, j]) for j in range(truth.shape[1])]
    return {"micro_f1": micro_f1((scores > 0.5).astype(np.float32)),
            "map": float(np.nanmean(aps)) if not np.all(np.isnan(aps)) else float("nan"),
            "label_frequency_f1": micro_f1(np.broadcast_to((prior > 0.5).astype(np.float32), truth.shape)),
            "labels": int(truth.shape[1]), "train_items": int(train_x.shape[0]), "test_items": int(test_x.shape[0])}


def token_probe(codec, train_records: Sequence[dict], test_records: Sequence[dict], kind: str = "word",
                min_count: int = 3, language: str = "en-us", batch_size: int = 8) -> dict:
    """Encode the records' audio with ``codec`` and probe its first-codebook tokens for the ``word`` (or
    ``phone``) content of their ``text``; labels are those seen ``min_count`` times in training."""
    from ..audio import load_audio
    if kind not in ("word", "phone"):
        raise ConfigError(f"probe kind must be 'word' or 'phone', got {kind!r}")
    if kind == "phone":
        from ..text import phonemize

        def labels(text: str) -> list[str]:
            return [c for c in phonemize(text, language) if c.strip()]
    else:
        labels = word_labels

    def encode(records):
        tokens, sets = [], []
        for rec in records:
            if not rec.get("text"):
                continue
            wav, sr = load_audio(rec["path"])
            with torch.inference_mode():
                tokens.append(codec.encode(wav, sample_rate=sr).tokens[0].cpu())
            sets.append(labels(rec["text"]))
        return tokens, sets

    train_tokens, train_sets = encode(train_records)
    test_tokens, test_sets = encode(test_records)
    if not train_tokens or not test_tokens:
        raise ConfigError("probe: both manifests need records with 'text'")
    counts = Counter(w for s in train_sets for w in set(s))
    vocabulary = sorted(w for w, n in counts.items() if n >= min_count)
    result = linear_probe(bag_of_tokens(train_tokens, codec.cardinality), label_matrix(train_sets, vocabulary),
                          bag_of_tokens(test_tokens, codec.cardinality), label_matrix(test_sets, vocabulary))
    return {"kind": kind, **result}
