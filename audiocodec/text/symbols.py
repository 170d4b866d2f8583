"""Fixed symbol inventories: the default character alphabet and the default IPA phoneme set.

Both are plain tuples of one-character strings in a fixed order, so token ids never change between
releases. A tokenizer stores its symbol list in ``to_dict()``; these defaults only matter for new ones.
"""
from __future__ import annotations

import string

#: Punctuation that carries prosody, kept by the normalisers and tokenised by every tokenizer.
PROSODY_PUNCTUATION = ",.?!;:"

#: Punctuation espeak-ng output is allowed to keep around phonemised words (see phonemes.py).
PHONEME_PUNCTUATION = ',.?!;:¡¿—…"()«»'

_ACCENTED_LETTERS = "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝŒ"

#: Default alphabet of :class:`~audiocodec.text.tokenizers.CharTokenizer`: space, ASCII letters and
#: digits, prosody punctuation, apostrophe, hyphen, and common accented Latin letters.
DEFAULT_CHARACTERS: tuple[str, ...] = tuple(
    " " + string.ascii_lowercase + string.ascii_uppercase + string.digits + PROSODY_PUNCTUATION + "'-¡¿"
    + _ACCENTED_LETTERS
)

_WORD_BOUNDARY = " "
_STRESS_AND_LENGTH = "ˈˌːˑ"
_INTONATION = "‖|‿↗↘↑↓"
_TONE_LETTERS = "˥˦˧˨˩"
#: IPA letters beyond ASCII (vowels and consonants), plus the few non-IPA letters espeak-ng emits.
_IPA_LETTERS = (
    "æçðøħŋœäëïöüɐɑɒɓɔɕɖɗɘəɚɛɜɝɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢ"
    "ʣʤʥʦʧʨβθχεφᵻᵝⱱǀǁǂǃ"
)
_MODIFIER_LETTERS = "ʰʱʲʷˠˤⁿˡʼ˞ᵊ"
#: Combining diacritics: nasal, centralised, voiceless, syllabic, dental, non-syllabic, ties, ...
_COMBINING_DIACRITICS = (
    "\u0303\u0308\u030a\u031d\u031e\u031f\u0320\u0324\u0325\u0329\u032a\u032f\u0330\u0334\u0339"
    "\u033a\u033b\u033c\u031a\u0361\u035c\u0306\u0300\u0301\u0304\u030c\u0302"
)

#: Default symbols of :class:`~audiocodec.text.tokenizers.PhonemeTokenizer`: one token per code point
#: of espeak-ng's IPA output (word boundary " ", stress marks and punctuation are tokens too).
DEFAULT_PHONEMES: tuple[str, ...] = tuple(dict.fromkeys(
    _WORD_BOUNDARY + PHONEME_PUNCTUATION + "'-" + _STRESS_AND_LENGTH + _INTONATION + _TONE_LETTERS
    + string.ascii_lowercase + string.digits + _IPA_LETTERS + _MODIFIER_LETTERS + _COMBINING_DIACRITICS
))
