"""The bistream TTS layout (CosyVoice 2 text/speech interleaving): the sequence and its loss mask, the
inference schedule, text arriving in pieces, and a tiny model that memorises utterances and speaks them
the same from a str or char by char."""
from __future__ import annotations

import random

import pytest
import torch

from audiocodec.data.tokens import TokenShards
from audiocodec.errors import ConfigError
from audiocodec.text.sentences import split_sentences
from audiocodec.train import Trainer
from audiocodec.tts import TTS, SynthesisOptions, TextFrontend, TTSModel, TTSVocab
from audiocodec.tts.bistream import SAMPLED, BistreamFeed, KnownText
from audiocodec.tts.layout import (AUDIO_BOS, BOS, EOS, IGNORE, SPEAKER, SequenceLayout, bistream_fits,
                                   bistream_sequence, split_sequence, training_sequence)
import test_tts

SENTENCES = test_tts.SENTENCES
corpus = test_tts.corpus        # the espeak-ng corpus fixture (module scope: built again for this module)

LAYOUT = {"type": "bistream", "text_chunk": 3, "speech_chunk": 4}


def _ids(vocab: TTSVocab):
    """``(t, s)``: the LM id of text token ``i`` and of speech token ``i``."""
    return (lambda i: vocab.text_offset + i), (lambda i: vocab.speech_offset + i)


def test_bistream_sequence_order_loss_mask_and_round_trip():
    vocab, layout = TTSVocab(text_size=10, speech_size=30), SequenceLayout.from_config(LAYOUT)
    t, s = _ids(vocab)
    text, speech = [9, 8, 7, 6, 5, 4, 3], torch.arange(20)[None]        # 7 text tokens (N=3), 20 speech (M=4)
    inputs, targets = training_sequence(vocab, text, speech, layout=layout)
    sequence = ([BOS, t(9), t(8), t(7)] + [s(i) for i in range(0, 4)] + [t(6), t(5), t(4)] + [s(i) for i in range(4, 8)]
                + [t(3), AUDIO_BOS] + [s(i) for i in range(8, 20)] + [EOS])
    assert inputs.tolist() == [sequence[:-1]]
    # scored: speech, eos, and audio_bos (fill: "more text") after each chunk's 4 speech tokens; never text
    assert targets.tolist() == [[IGNORE] * 3 + [s(i) for i in range(0, 4)] + [AUDIO_BOS] + [IGNORE] * 2
                                + [s(i) for i in range(4, 8)] + [AUDIO_BOS, IGNORE]
                                + [s(i) for i in range(8, 20)] + [EOS]]
    assert torch.equal(bistream_sequence(vocab, layout, text, speech)[0], torch.tensor(sequence))
    back_text, back_speech = split_sequence(vocab, torch.tensor(sequence))
    assert back_text == text and torch.equal(back_speech, speech)

    # text ending on a chunk boundary: the fill target, then audio_bos as input ("the text has ended")
    inputs, targets = training_sequence(vocab, [1, 2, 3], torch.tensor([[0, 1, 2, 3, 4]]), layout=layout)
    assert inputs.tolist() == [[BOS, t(1), t(2), t(3), s(0), s(1), s(2), s(3), AUDIO_BOS, s(4)]]
    assert targets.tolist() == [[IGNORE, IGNORE, IGNORE, s(0), s(1), s(2), s(3), AUDIO_BOS, s(4), EOS]]
    # a speaker prompt in front is given, not scored; the round trip skips it
    inputs, targets = training_sequence(vocab, [1], torch.tensor([[5, 6]]), torch.tensor([[7, 8]]), layout)
    assert inputs.tolist() == [[SPEAKER, s(7), s(8), BOS, t(1), AUDIO_BOS, s(5), s(6)]]
    assert targets.tolist() == [[IGNORE] * 5 + [s(5), s(6), EOS]]
    back_text, back_speech = split_sequence(vocab, inputs[0])
    assert back_text == [1] and back_speech.tolist() == [[5, 6]]
    # too little speech for the whole text chunks
    assert not bistream_fits(layout, 7, 7) and bistream_fits(layout, 7, 8)
    with pytest.raises(ValueError, match="too few"):
        training_sequence(vocab, text, torch.arange(7)[None], layout=layout)
    with pytest.raises(ConfigError, match="single-codebook"):
        training_sequence(TTSVocab(10, 30, num_codebooks=2), text, torch.zeros(2, 20, dtype=torch.long), layout=layout)


class _ArrivingText:
    """A text source that records when each chunk was asked for (against ``clock``: steps generated)."""

    def __init__(self, tokens):
        self.tokens, self.asked, self.clock = list(tokens), [], 0

    def take(self, n):
        self.asked.append(self.clock)
        out, self.tokens = self.tokens[:n], self.tokens[n:]
        return out


def _run_feed(feed: BistreamFeed, speech: list[int], source=None) -> list[int]:
    """The sequence a feed lays out when the model 'samples' ``speech`` (then eos once it may)."""
    out, speech, step = feed.prompt(), list(speech), 0
    while True:
        token = feed.given(step)
        if token is None:
            assert speech or feed.may_end(step)
            token = feed.vocab.speech_offset + speech.pop(0) if speech else EOS
        out.append(token)
        if token == EOS:
            return out
        step += 1
        if source is not None:
            source.clock = step


def test_feed_lays_out_the_training_sequence_and_reads_text_when_needed():
    vocab, layout = TTSVocab(text_size=20, speech_size=30), SequenceLayout.from_config(LAYOUT)
    text, speech = [1, 2, 3, 4, 5, 6, 7], list(range(20))
    source = _ArrivingText(text)
    feed = BistreamFeed(vocab, layout, source, min_ratio=0.0)
    assert _run_feed(feed, speech, source) == bistream_sequence(vocab, layout, text, torch.tensor([speech]))[0].tolist()
    # the prompt reads the first chunk; each next chunk is asked for after 4 sampled speech tokens (+ 3 text)
    assert source.asked == [0, 4, 11]
    # voice cloning: the reference transcript and speech interleave like one longer utterance; everything up
    # to the end of the reference speech is the prompt
    ref_text, ref_speech = [11, 12, 13, 14], [20, 21, 22, 23, 24, 25]
    feed = BistreamFeed(vocab, layout, KnownText(text), ref_text, torch.tensor([ref_speech]), min_ratio=0.0)
    whole = bistream_sequence(vocab, layout, ref_text + text, torch.tensor([ref_speech + speech]))[0].tolist()
    assert _run_feed(feed, speech) == whole
    assert feed.plan[len(feed.prompt()) - 1] == SAMPLED and feed.prompt() == whole[:len(feed.prompt())]
    # eos: not before min_ratio x text (in the tail), forced at max_ratio x text
    feed = BistreamFeed(vocab, layout, KnownText([1, 2]), min_ratio=2.0, max_ratio=3.0)
    assert feed.prompt() == [BOS, vocab.text_offset + 1, vocab.text_offset + 2, AUDIO_BOS]
    assert [feed.may_end(step) for step in range(6)] == [False, False, False, False, True, True]
    assert [feed.given(step) for step in range(7)] == [None] * 6 + [EOS]


def test_bad_layout_configs_name_the_key():
    for config, key in (({"type": "zigzag"}, "task.layout.type"),
                        ({"type": "bistream", "text_chunk": 0}, "task.layout.text_chunk"),
                        ({"type": "bistream", "speech_chunk": "15"}, "task.layout.speech_chunk"),
                        ({"type": "bistream", "speech_chunk": True}, "task.layout.speech_chunk"),
                        ({"type": "plain", "text_chunk": 5}, "task.layout.text_chunk"),
                        ({"type": "bistream", "chunk": 5}, "task.layout"), ("bistream", "task.layout")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            SequenceLayout.from_config(config, "task.layout")
    from pathlib import Path
    from audiocodec.config import load_yaml
    from audiocodec.train import TASKS, resolve_config
    recipe = load_yaml(Path(__file__).resolve().parents[1] / "recipes" / "tts" / "mini_bistream.yaml")
    assert TASKS.build(resolve_config(recipe)["task"], "task").layout == SequenceLayout("bistream", 5, 15)
    with pytest.raises(ConfigError, match=r"task\.layout\.speech_chunk"):
        TASKS.build(resolve_config(recipe, ["task.layout.speech_chunk=-1"])["task"], "task")
    # a model records a bistream layout (and refuses it with several codebooks); a plain model's config is unchanged
    args = ({"text_size": 10, "speech_size": 30}, {"dim": 16, "num_layers": 1, "num_heads": 2}, {}, {})
    assert "layout" not in TTSModel(*args).config
    assert TTSModel(*args, layout=LAYOUT).config["layout"] == {**LAYOUT}
    with pytest.raises(ConfigError, match=r"layout\.type.*single-codebook"):
        TTSModel({**args[0], "num_codebooks": 2}, *args[1:], layout=LAYOUT)


def _frontend() -> TextFrontend:
    pangrams = ["The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX, JUMPS!?"]
    return TextFrontend.from_config({"tokenizer": {"type": "char"}}, texts=pangrams)


def test_text_stream_tokens_do_not_depend_on_how_the_text_was_cut():
    frontend = _frontend()
    text = "Dr. Smith paid $3.50 on Jan. 21st, 1999. Then he left!  Did he? Yes, 3 kg of it.\n\nA new one"
    whole = frontend.stream(text).token_lists()
    assert whole == [frontend.encode(s) for s in split_sentences(text)]       # one utterance per sentence
    rng = random.Random(0)
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 12)))
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        assert frontend.stream(iter(pieces)).token_lists() == whole
    assert frontend.stream(iter(text)).token_lists() == whole                    # char by char
    # a sentence longer than max_tokens is cut at word boundaries
    long = frontend.stream(iter("one two three four five six."), max_tokens=9).token_lists()
    assert [frontend.tokenizer.decode(t) for t in long] == ["one two", "three", "four five", "six."]


def test_text_stream_releases_words_before_the_text_ends():
    frontend = _frontend()
    read = []

    def pieces():
        for c in "Tom has a red kite. The sea":
            read.append(c)
            yield c
    stream = frontend.stream(pieces())
    first = next(stream.utterances())
    assert frontend.tokenizer.decode(first.take(3)) == "Tom"
    assert "".join(read) == "Tom has a"          # one word of look-ahead: "Tom" once "has" is complete
    assert frontend.tokenizer.decode(first.take(100)) == " has a red kite."
    assert "".join(read) == "Tom has a red kite. T"   # the sentence closed when the next one began


@pytest.fixture(scope="module")
def trained_bistream(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("tts_bistream_run")
    config = {
        "name": "tts_bistream",
        "task": {"type": "tts_lm", "train": str(corpus / "tokens"), "codec": "wavtokenizer-75-small-mini",
                 "model": {"dim": 64, "num_layers": 2, "num_heads": 4}, "max_tokens": 4000,
                 "speaker_prompt_prob": 0.0, "layout": {"type": "bistream", "text_chunk": 5, "speech_chunk": 15}},
        "trainer": {"max_steps": 250, "log_every": 50, "val_every": 0, "ckpt_every": 250, "threads": 1,
                    "progress": False, "device": "cpu", "seed": 0},
        "optim": {"main": {"lr": 3e-3, "weight_decay": 0.0}},
    }
    trainer = Trainer(config, run_dir=run)
    assert len(trainer.task.train_examples) == 3, trainer.task.train_examples.skipped
    trainer.fit()
    return run


def test_bistream_model_memorises_utterances(corpus, trained_bistream):
    tts = TTS.load(trained_bistream / "tts")
    assert tts.layout == SequenceLayout("bistream", 5, 15)                  # recorded in the exported model
    shards = TokenShards(corpus / "tokens")
    expected = {r["text"]: t for r, t in zip(shards.records, shards.tokens)}
    batched = tts.generate_tokens(SENTENCES, options=SynthesisOptions(greedy=True))
    for text, tokens in zip(SENTENCES, batched):
        assert torch.equal(tokens, expected[text]), text
    for text, tokens in zip(SENTENCES, batched):                             # batched == one at a time
        assert torch.equal(tts.generate_tokens([text], options=SynthesisOptions(greedy=True))[0], tokens)


def test_text_char_by_char_gives_the_same_speech(corpus, trained_bistream):
    tts = TTS.load(trained_bistream / "tts")
    shards = TokenShards(corpus / "tokens")
    expected = {r["text"]: t for r, t in zip(shards.records, shards.tokens)}
    text = SENTENCES[0] + " " + SENTENCES[2]
    whole = tts.speech_tokens(text, greedy=True)                              # one batch, text known
    chars = tts.speech_tokens(iter(text), stream=True, greedy=True)           # step by step as chars arrive
    words = tts.speech_tokens((w + " " for w in text.split()), stream=True, greedy=True)
    for tokens in (whole, chars, words):
        assert len(tokens) == 2
        assert torch.equal(tokens[0], expected[SENTENCES[0]]) and torch.equal(tokens[1], expected[SENTENCES[2]])
    # audio: streamed while the text arrives == offline; the first chunk comes before the text has ended
    read = []

    def arriving():
        for c in text:
            read.append(c)
            yield c
    chunks = []
    for chunk in tts.synthesize(arriving(), stream=True, greedy=True):
        chunks.append((len(read), chunk))
    assert chunks[0][0] < len(text)
    assert torch.equal(torch.cat([c for _, c in chunks]), tts.synthesize(text, greedy=True))


def test_bistream_voice_cloning_and_speaker_prompt(corpus, trained_bistream):
    tts = TTS.load(trained_bistream / "tts")
    options = dict(voice=corpus / "u0.wav", voice_text=SENTENCES[0], greedy=True)
    offline = tts.speech_tokens(SENTENCES[1], **options)
    streamed = tts.speech_tokens(iter(SENTENCES[1]), stream=True, **options)
    assert offline[0].shape[0] == 1 and offline[0].shape[1] > 0 and torch.equal(offline[0], streamed[0])
    from_audio_alone = tts.speech_tokens(SENTENCES[1], voice=corpus / "u0.wav", greedy=True)[0]
    assert from_audio_alone.shape[0] == 1 and from_audio_alone.shape[1] > 0
    with pytest.raises(ConfigError, match="nothing to say"):
        tts.synthesize("   ")
    with pytest.raises(ConfigError, match="nothing to say"):
        list(tts.synthesize(iter(["  ", "*"]), stream=True))
