"""The TTS text frontend: normalisation, sentence splitting and chunking, phonemes, tokenizers.

Phoneme tests need ``phonemizer-fork`` + ``espeakng-loader`` (they ship espeak-ng): when missing they fail
with the install hint rather than skip. Only the system ``espeak-ng`` program, an optional fallback, is
skipped when absent.
"""
import json
import re
import shutil

import numpy as np
import pytest
import torch

from audiocodec.errors import ConfigError
from audiocodec.text import (BOS_ID, EOS_ID, PAD_ID, UNK_ID, UNK_TEXT, BPETokenizer, ByteTokenizer, CharTokenizer,
                             Normalizer, PhonemeBackendError, PhonemeTokenizer, TextError, Tokenizer,
                             build_tokenizer, chunk_text, get_normalizer, get_phoneme_backend, normalize_text,
                             phonemize, register_normalizer, split_long_sentence, split_sentences)
from audiocodec.text import normalize as normalize_module
from audiocodec.text import phonemes as phonemes_module

# -- normalisation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("I have 3 cats and 1,234 dogs.", "I have three cats and one thousand two hundred and thirty-four dogs."),
    ("Pi is 3.14 and it is -5 outside.", "Pi is three point one four and it is minus five outside."),
    ("Agent 007 has .5 of it.", "Agent zero zero seven has point five of it."),
    ("The 21st and 2nd and 3rd and 100th.", "The twenty-first and second and third and one hundredth."),
    ("In 1999 and 2024.", "In nineteen ninety-nine and twenty twenty-four."),
    ("The 1990s and the '80s.", "The nineteen nineties and the eighties."),
    ("It cost $3.50, $1 or £2.01.", "It cost three dollars and fifty cents, one dollar or two pounds and one penny."),
    ("Only €0.50 or $2.5 million or $5k.",
     "Only fifty cents or two point five million dollars or five thousand dollars."),
    ("Down 50% to 3.5 %.", "Down fifty percent to three point five percent."),
    ("At 10:30, 10:05, 10:00 and 14:00.", "At ten thirty, ten oh five, ten o'clock and fourteen hundred."),
    ("From 9:15 am to 5pm.", "From nine fifteen a.m. to five p.m."),
    ("Pages 5–10 of MP3 tools, #1 at 25°C.",
     "Pages five to ten of MP three tools, number one at twenty-five degrees Celsius."),
    ("A 5-year-old & 2 cats.", "A five-year-old and two cats."),
])
def test_english_numbers(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith met Dr. Jones.", "Mister Smith met Doctor Jones."),
    ("Mrs. Brown, Jr. and Prof. White", "Missus Brown, Junior and Professor White"),
    ("He lives on Main St. Then he moved to St. Louis.", "He lives on Main Street. Then he moved to Saint Louis."),
    ("Fruit, e.g. apples, pears, etc. and i.e. food.", "Fruit, for example apples, pears, et cetera and that is food."),
    ("See No. 5 on Jan. 21st. I said no.", "See Number five on January twenty-first. I said no."),
    ("Smith & Sons Ltd.", "Smith and Sons Limited."),
])
def test_english_abbreviations(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Hello, world; yes: no? Yes! Ok.", "Hello, world; yes: no? Yes! Ok."),     # prosody marks are kept
    ("“Quoted” — ‘single’...", "Quoted, single."),
    ("Wow!!! Really?! Hmm , ok .", "Wow! Really? Hmm, ok."),
    ("  spaced\t\tout\n\nlines\u00a0here ", "spaced out lines here"),
    ("He said (maybe) [yes] *now* :)", "He said, maybe, yes, now"),
    ("ＡＢＣ１２ zero\u200bwidth", "ABC twelve zerowidth"),                       # NFKC, invisible characters
    ("It's Anne's dogs' toy.", "It's Anne's dogs toy."),
])
def test_english_punctuation_and_unicode(text, expected):
    assert normalize_text(text) == expected


def test_acronyms_are_spelled_only_when_asked():
    assert normalize_text("The FBI and the U.S.A.") == "The FBI and the U.S.A."
    assert normalize_text("The FBI and the U.S.A.", spell_out_acronyms=True) == "The F B I and the U S A."


def test_other_languages_get_basic_normalisation_and_can_plug_in(monkeypatch):
    assert normalize_text("Er hat 42 Äpfel,  „gut“!", "de") == "Er hat zweiundvierzig Äpfel, gut!"
    assert normalize_text("Il a 21 ans.", "fr") == "Il a vingt et un ans."
    assert normalize_text("¿Tienes 3 gatos?", "es") == "¿Tienes tres gatos?"
    assert normalize_text("abc 5", "xx") == "abc 5"          # num2words has no "xx": numbers stay as digits

    class Shouting(Normalizer):
        def expand(self, text):
            return text.upper()
    monkeypatch.setitem(normalize_module._NORMALIZERS, "xx", lambda: Shouting("xx"))
    assert normalize_text("hi  there", "xx-YY") == "HI THERE"
    register_normalizer("zz", lambda: Shouting("zz"))
    try:
        assert isinstance(get_normalizer("zz"), Shouting)
    finally:
        del normalize_module._NORMALIZERS["zz"]


def test_normalisation_errors():
    with pytest.raises(TextError, match="must be a str"):
        normalize_text(42)
    with pytest.raises(TextError, match="language code"):
        normalize_text("hi", "english!")
    with pytest.raises(TextError, match="bad option"):
        normalize_text("hi", "en", shout=True)


# -- sentences and chunks --------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith paid $3.50. Is it 3.5 kg? Yes!", ["Mr. Smith paid $3.50.", "Is it 3.5 kg?", "Yes!"]),
    ("J. R. R. Tolkien wrote. He was born in 1892.", ["J. R. R. Tolkien wrote.", "He was born in 1892."]),
    ("Apples, pears, etc. And more. We used e.g. apples.",
     ["Apples, pears, etc.", "And more.", "We used e.g. apples."]),
    ('Wait... what? He said "Stop." Then left.', ["Wait... what?", 'He said "Stop."', "Then left."]),
    ("Main St. is long. See No. 5 now. I said no. OK.", ["Main St. is long.", "See No. 5 now.", "I said no.", "OK."]),
    ("Line one\nstill one.\n\nNew paragraph", ["Line one still one.", "New paragraph"]),
    ("你好。我很好！", ["你好。", "我很好！"]),
    ("Version 1.2.3 is out", ["Version 1.2.3 is out"]),
    ("", []),
    ("  \n ", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_uses_the_language_abbreviations():
    assert split_sentences("Er kam z.B. heute. Dann ging er.", "de") == ["Er kam z.B. heute.", "Dann ging er."]


LONG_TEXT = (
    "Dr. Smith arrived at 10:30 a.m. on a cold morning. He had travelled, as he often did, across three "
    "counties, two rivers and one long, winding, muddy road that nobody in their right mind would take unless "
    "they absolutely had to. The house was quiet. Mrs. Jones, who kept it, said nothing at all; she simply "
    "pointed at the stairs, the lamp, the door and the small wooden box that had been waiting there since "
    "1999. It cost $3.50. Nobody knew why. " * 5
)


@pytest.mark.parametrize("max_chars", [20, 57, 120, 400])
def test_chunks_respect_the_limit_and_lose_no_words(max_chars):
    chunks = chunk_text(LONG_TEXT, max_chars)
    assert chunks and all(0 < len(c) <= max_chars for c in chunks)
    assert " ".join(chunks).split() == LONG_TEXT.split()


def test_chunks_prefer_sentence_then_clause_boundaries():
    assert chunk_text("One. Two, three. Four.", 12) == ["One.", "Two, three.", "Four."]
    assert chunk_text("One. Two. Three.", 100) == ["One. Two. Three."]
    pieces = split_long_sentence("first clause here, second clause here, third one", 20)
    assert pieces == ["first clause here,", "second clause here,", "third one"]
    assert chunk_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]     # only an over-long word is cut
    assert chunk_text("   ", 10) == []


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_chunk_limit_must_be_a_positive_int(bad):
    with pytest.raises(TextError, match="max_chars"):
        chunk_text("Some text.", bad)


# -- phonemes --------------------------------------------------------------------------------------

def test_phoneme_backend_comes_from_the_wheel():
    backend = get_phoneme_backend("library")   # fails with the install hint when phonemizer-fork is missing
    assert "espeakng-loader" in backend.library_source, (
        f"espeak-ng was not loaded from the espeakng-loader wheel ({backend.library_source}); "
        "pip install espeakng-loader")
    assert {"en-us", "en-gb", "de", "fr-fr", "es"} <= backend.languages()


def test_phonemize_english_keeps_stress_words_and_punctuation():
    ipa = phonemize("Hello, world! How are you?", "en-us")
    assert ipa.startswith("h") and "ə" in ipa and "l" in ipa and "oʊ" in ipa and "ˈ" in ipa
    assert re.fullmatch(r"\S+, \S+! \S+ \S+ \S+\?", ipa), ipa
    assert phonemize("tomato", "en-gb") != phonemize("tomato", "en-us")
    assert phonemize("", "en-us") == ""


@pytest.mark.parametrize("language, text, expected_parts", [
    ("de", "Guten Tag, wie geht's?", ["ɡˈuːtən", "tˈɑːk,", "?"]),
    ("fr", "Bonjour le monde.", ["bɔ̃ʒˈuʁ", "mˈɔ̃d."]),
    ("fr-fr", "Le cœur.", ["kˈœʁ."]),
    ("es", "Hola, ¿cómo estás?", ["ˈola,", "¿kˈomo", "estˈas?"]),
])
def test_phonemize_other_languages(language, text, expected_parts):
    ipa = phonemize(text, language)
    for part in expected_parts:
        assert part in ipa.split(" ") or part in ipa, (part, ipa)


def test_unknown_language_names_close_codes():
    with pytest.raises(TextError, match="did you mean.*en-us"):
        phonemize("hi", "en-zz")


def test_no_backend_error_says_what_to_install(monkeypatch):
    class Missing:
        def __init__(self):
            raise PhonemeBackendError("not installed")
    monkeypatch.setattr(phonemes_module, "_BACKENDS", {"library": Missing, "binary": Missing})
    get_phoneme_backend.cache_clear()
    try:
        with pytest.raises(PhonemeBackendError, match="pip install phonemizer-fork espeakng-loader.*apt-get install"):
            get_phoneme_backend()
    finally:
        get_phoneme_backend.cache_clear()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="optional fallback: system espeak-ng not installed")
def test_binary_backend_agrees_with_the_library():
    binary = get_phoneme_backend("binary")
    for language, text in [("en-us", "Hello, world!"), ("de", "Guten Tag."), ("es", "¿Qué tal?")]:
        assert phonemize(text, language, binary) == phonemize(text, language, get_phoneme_backend("library"))


# -- tokenizers ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bpe():
    corpus = ["The quick brown fox jumps over the lazy dog.", "Hello, world! How are you today?",
              "She sells sea shells by the sea shore.", "Peter Piper picked a peck of pickled peppers.",
              "  Two  spaces, 1234 digits; and: marks?!"] * 4
    return BPETokenizer.train(corpus, vocab_size=120)


@pytest.fixture(scope="module")
def tokenizers(bpe):
    return {
        "char": CharTokenizer(),
        "char-corpus": CharTokenizer(corpus=["abc def", "fed cba!"], lowercase=True),
        "byte": ByteTokenizer(),
        "phoneme": PhonemeTokenizer("en-us", normalize="en"),
        "bpe": bpe,
    }


def test_special_ids_are_fixed_everywhere(tokenizers):
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    for name, tok in tokenizers.items():
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3), name
        ids = tok.encode("abc", add_bos=True, add_eos=True)
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID and all(3 < i < tok.vocab_size for i in ids[1:-1]), name
        assert tok.decode([PAD_ID, BOS_ID] + ids[1:-1] + [EOS_ID, PAD_ID]) == tok.decode(ids[1:-1]), name


@pytest.mark.parametrize("name, text", [
    ("char", "Hello, World! 42 fiancée."), ("char-corpus", "ABC def!"), ("byte", "héllo ✓ 世界 🙂"),
    ("bpe", "She sells the lazy dog, 1234 peppers!"), ("bpe", "  Two  spaces, and: marks?!"),
])
def test_round_trip(tokenizers, name, text):
    tok = tokenizers[name]
    expected = text.lower() if name == "char-corpus" else text
    assert tok.decode(tok.encode(text)) == expected


def test_unknown_symbols_become_unk(tokenizers, bpe):
    char = tokenizers["char"]
    ids = char.encode("a§b")
    assert ids[1] == UNK_ID and char.decode(ids) == f"a{UNK_TEXT}b"
    assert bpe.encode("zebra Ω")[-1] == UNK_ID and UNK_TEXT in bpe.decode(bpe.encode("zebra Ω"))
    assert ByteTokenizer().decode([4 + 0xC3, UNK_ID, 4 + ord("h")]) == f"\ufffd{UNK_TEXT}h"


def test_phoneme_tokenizer_tokenises_ipa_per_symbol(tokenizers):
    tok = tokenizers["phoneme"]
    text = "Hello, Dr. Smith! It's 3:30."
    ipa = tok.phonemize(text)
    ids = tok.encode(text)
    assert tok.decode(ids) == ipa and UNK_ID not in ids and len(ids) == len(ipa)
    for symbol in ("ˈ", " ", ",", "!", "."):
        assert tok.symbols.index(symbol) + 4 in ids
    assert "dˈɑːktɚ" in ipa and "θɹˈiː θˈɜːɾi" in ipa          # normalised before phonemising
    for language, text in [("de", "Guten Tag, Herr Müller."), ("fr", "Un bon vin blanc."),
                           ("es", "¿Qué tal, señor?")]:
        other = PhonemeTokenizer(language)
        ids = other.encode(text)
        assert UNK_ID not in ids and other.decode(ids) == phonemize(text, language)


def test_phoneme_vocabulary_from_a_corpus():
    tok = PhonemeTokenizer("en-us", corpus=["hello world", "good morning"])
    assert tok.vocab_size == 4 + len(set(phonemize("hello world", "en-us") + phonemize("good morning", "en-us")))
    assert UNK_ID in tok.encode("zebra jazz")


def test_bpe_is_lossless_on_its_corpus_and_small(bpe):
    assert 4 < bpe.vocab_size <= 120
    for line in ["The quick brown fox jumps over the lazy dog.", "Peter Piper picked a peck of pickled peppers."]:
        ids = bpe.encode(line)
        assert bpe.decode(ids) == line and len(ids) < len(line) / 2     # merges actually happened
    with_bytes = BPETokenizer.train(["abc abc abd"], vocab_size=300, byte_fallback=True)
    assert with_bytes.decode(with_bytes.encode("abc Ω")) == "abc Ω" and UNK_ID not in with_bytes.encode("abc Ω")


@pytest.mark.parametrize("name", ["char", "char-corpus", "byte", "phoneme", "bpe"])
def test_json_round_trip_gives_identical_ids(tokenizers, name, tmp_path):
    tok = tokenizers[name]
    text = "Hello there, 3 quick peppers! Ω"
    config = json.loads(json.dumps(tok.to_dict()))
    restored = build_tokenizer(config)
    assert type(restored) is type(tok) and restored == tok
    assert restored.encode(text) == tok.encode(text) and restored.vocab_size == tok.vocab_size
    tok.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json").encode(text) == tok.encode(text)
    assert type(tok).from_json(tok.to_json()).encode(text) == tok.encode(text)


def test_decode_accepts_arrays_and_rejects_bad_ids():
    tok = ByteTokenizer()
    ids = tok.encode("hi")
    assert tok.decode(np.array(ids)) == tok.decode(torch.tensor(ids)) == "hi"
    with pytest.raises(TextError, match="outside this tokenizer's vocabulary"):
        tok.decode([5, 260])
    with pytest.raises(TextError, match="not an int"):
        tok.decode([5, 1.5])
    with pytest.raises(TextError, match="sequence of int"):
        tok.decode("hi")
    with pytest.raises(TextError, match="must be a str"):
        tok.encode(b"hi")


def test_normalising_tokenizer():
    tok = CharTokenizer(normalize="en")
    assert tok.decode(tok.encode("Dr. Who, 3 times")) == "Doctor Who, three times"
    assert tok.to_dict()["normalize"] == "en"


@pytest.mark.parametrize("config, message", [
    ({"type": "word"}, "unknown tokenizer type 'word'; known: bpe, byte, char, phoneme"),
    ({"symbols": ["a"]}, "'type' key"),
    ("char", "must be a dict"),
    ({"type": "char", "vocab": ["a"]}, "unknown config key.*tokenizer.vocab"),
    ({"type": "char", "symbols": ["ab"]}, "one-character"),
    ({"type": "char", "symbols": ["a", "a"]}, "more than once"),
    ({"type": "char", "symbols": ["a"], "corpus": ["a"]}, "either 'symbols' or 'corpus'"),
    ({"type": "char", "corpus": "just a str"}, "list of str"),
    ({"type": "char", "normalize": "klingon!"}, "normalize"),
    ({"type": "byte", "lowercase": True}, "unknown config key"),
    ({"type": "phoneme", "language": "xx-nope"}, "no language 'xx-nope'"),
    ({"type": "phoneme", "backend": "festival"}, "unknown phoneme backend"),
    ({"type": "bpe"}, "either 'model'"),
    ({"type": "bpe", "model": "not base64!"}, "base64"),
    ({"type": "bpe", "model": "AAAAAAAA"}, "does not load"),
    ({"type": "bpe", "corpus": ["abc"], "vocab_size": 2}, "vocab_size"),
    ({"type": "bpe", "corpus": ["  "]}, "empty"),
])
def test_bad_configs_raise_clear_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        build_tokenizer(config)


def test_from_dict_checks_the_type():
    with pytest.raises(ConfigError, match="expected a 'char' tokenizer"):
        CharTokenizer.from_dict(ByteTokenizer().to_dict())
    with pytest.raises(ConfigError, match="not valid JSON"):
        Tokenizer.from_json("{nope")
