"""Text -> IPA phonemes through espeak-ng, with punctuation kept and words separated by spaces.

Two backends, tried in this order by :func:`get_phoneme_backend`:

* ``"library"``: espeak-ng's shared library through ``phonemizer-fork``. The library and its voice data
  come from the ``espeakng-loader`` wheel, so no system package is needed (without that wheel the
  system ``libespeak-ng`` is used, if any).
* ``"binary"``: the system ``espeak-ng`` program (``apt-get install espeak-ng``), run once per clause.

>>> phonemize("Hello, world!", "en-us")
'həlˈoʊ, wˈɜːld!'
"""
from __future__ import annotations

import difflib
import functools
import logging
import re
import shutil
import subprocess
from typing import Optional

from .errors import PhonemeBackendError, TextError
from .normalize import check_text, collapse_whitespace
from .symbols import PHONEME_PUNCTUATION

INSTALL_HINT = ("install the Python packages that ship espeak-ng: pip install phonemizer-fork espeakng-loader "
                "(no system package needed), or install the system espeak-ng (e.g. apt-get install espeak-ng)")

#: Common codes espeak-ng spells differently.
LANGUAGE_ALIASES = {"en": "en-us", "en-uk": "en-gb", "fr": "fr-fr", "es-es": "es", "es-mx": "es-419",
                    "pt-pt": "pt", "zh": "cmn", "zh-cn": "cmn", "nb": "nb", "no": "nb"}

_PUNCTUATION_RUN_RE = re.compile(r"(\s*[" + re.escape(PHONEME_PUNCTUATION) + r"]+\s*)")
_LANGUAGE_FLAG_RE = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9-]+)?\)")


class PhonemeBackend:
    """One way of running espeak-ng. Subclasses set ``name`` and implement the two methods below."""

    name = "base"

    def languages(self) -> set[str]:
        """espeak-ng language codes this backend can phonemise ("en-us", "de", "fr-fr", ...)."""
        raise NotImplementedError

    def phonemize_segments(self, segments: list[str], language: str) -> list[str]:
        """IPA for each segment (punctuation-free text), words separated by single spaces."""
        raise NotImplementedError


class EspeakLibraryBackend(PhonemeBackend):
    """espeak-ng's shared library through phonemizer-fork; the library from espeakng-loader when installed.

    Pointing phonemizer at the wheel's library is process-wide (phonemizer keeps it in a class attribute).

    Raises:
        PhonemeBackendError: phonemizer-fork is missing, or no espeak-ng library can be loaded.
    """

    name = "library"

    def __init__(self):
        try:
            from phonemizer.backend import EspeakBackend
            from phonemizer.backend.espeak.wrapper import EspeakWrapper
            from phonemizer.separator import Separator
        except ImportError as e:
            raise PhonemeBackendError(f"phonemizer-fork is not installed ({e})") from e
        try:
            import espeakng_loader
        except ImportError:
            self.library_source = "system libespeak-ng"
        else:
            EspeakWrapper.set_library(espeakng_loader.get_library_path())
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
            self.library_source = f"espeakng-loader ({espeakng_loader.get_library_path()})"
        self._espeak_backend = EspeakBackend
        self._separator = Separator(phone="", syllable="", word=" ")
        # phonemizer warns about every removed language-switch flag and word-count mismatch: not useful here.
        self._logger = logging.getLogger(f"{__name__}.phonemizer")
        self._logger.setLevel(logging.ERROR)
        try:
            self._languages = set(EspeakBackend.supported_languages())
            self.version = ".".join(map(str, EspeakBackend.version()))
        except RuntimeError as e:
            raise PhonemeBackendError(f"phonemizer-fork found no espeak-ng library ({e})") from e

    def languages(self) -> set[str]:
        return set(self._languages)

    @functools.lru_cache(maxsize=None)
    def _voice(self, language: str):
        return self._espeak_backend(language, with_stress=True, tie=False, language_switch="remove-flags",
                                    words_mismatch="ignore", logger=self._logger)

    def phonemize_segments(self, segments: list[str], language: str) -> list[str]:
        return self._voice(language).phonemize(list(segments), separator=self._separator, strip=True, njobs=1)


class EspeakBinaryBackend(PhonemeBackend):
    """The system ``espeak-ng`` program, one call per segment.

    Args:
        executable: path of espeak-ng; found on PATH when None.

    Raises:
        PhonemeBackendError: no such program.
    """

    name = "binary"

    def __init__(self, executable: Optional[str] = None):
        self.executable = executable or shutil.which("espeak-ng")
        if not self.executable or not shutil.which(self.executable):
            raise PhonemeBackendError("no espeak-ng program on PATH")
        self._languages: Optional[set[str]] = None

    def _run(self, *args: str, stdin: str = "") -> str:
        result = subprocess.run([self.executable, *args], input=stdin, capture_output=True, text=True,
                                encoding="utf-8", timeout=60)
        if result.returncode != 0:
            raise PhonemeBackendError(f"{self.executable} {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def languages(self) -> set[str]:
        if self._languages is None:
            lines = self._run("--voices").splitlines()[1:]
            self._languages = {line.split()[1] for line in lines if len(line.split()) > 1}
        return set(self._languages)

    def phonemize_segments(self, segments: list[str], language: str) -> list[str]:
        out = []
        for segment in segments:
            ipa = self._run("-q", "--ipa", "-b", "1", "-v", language, "--stdin", stdin=segment)
            out.append(collapse_whitespace(_LANGUAGE_FLAG_RE.sub("", ipa)))
        return out


_BACKENDS = {"library": EspeakLibraryBackend, "binary": EspeakBinaryBackend}


@functools.lru_cache(maxsize=None)
def get_phoneme_backend(name: str = "auto") -> PhonemeBackend:
    """The backend called ``name`` ("library" or "binary"), or with "auto" the first that works.

    Raises:
        TextError: an unknown name.
        PhonemeBackendError: the backend (with "auto": every backend) is unavailable; says what to install.
    """
    if name != "auto" and name not in _BACKENDS:
        raise TextError(f"unknown phoneme backend {name!r}; known: auto, {', '.join(_BACKENDS)}")
    failures = []
    for candidate in ([name] if name != "auto" else list(_BACKENDS)):
        try:
            return _BACKENDS[candidate]()
        except PhonemeBackendError as e:
            failures.append(f"{candidate}: {e}")
    raise PhonemeBackendError(f"no espeak-ng phonemizer available ({'; '.join(failures)}); {INSTALL_HINT}")


def resolve_language(language: str, available: set[str]) -> str:
    """The espeak-ng code for ``language`` ("en" -> "en-us", "FR" -> "fr-fr"); TextError naming close codes."""
    if not isinstance(language, str) or not language.strip():
        raise TextError(f"language must be a non-empty str such as 'en-us', got {language!r}")
    code = language.strip().lower().replace("_", "-")
    code = code if code in available else LANGUAGE_ALIASES.get(code, code)
    if code not in available:
        close = sorted(c for c in available if c.split("-")[0] == code.split("-")[0])
        close = close or difflib.get_close_matches(code, sorted(available), n=5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(available))}"
        raise TextError(f"espeak-ng has no language {language!r}; {hint}")
    return code


def phonemize(text: str, language: str = "en-us", backend: Optional[PhonemeBackend] = None) -> str:
    """IPA phonemes of ``text`` (str): stress marks kept, words separated by one space, the punctuation
    in :data:`~audiocodec.text.symbols.PHONEME_PUNCTUATION` kept in place ("həlˈoʊ, wˈɜːld!").

    Args:
        text: the text; normalise it first (:func:`~audiocodec.text.normalize_text`) for best results.
        language: an espeak-ng language code, or a common alias ("en" -> "en-us", "fr" -> "fr-fr").
        backend: a :class:`PhonemeBackend`; the first available one when None.

    Raises:
        TextError: text is not a str, or espeak-ng does not know the language.
        PhonemeBackendError: no espeak-ng could be found (the message says what to install).
    """
    text = collapse_whitespace(check_text(text))
    backend = backend or get_phoneme_backend()
    language = resolve_language(language, backend.languages())
    parts = _PUNCTUATION_RUN_RE.split(text)           # words at even indices, punctuation runs at odd ones
    words = {i: part.strip() for i, part in enumerate(parts) if i % 2 == 0 and part.strip()}
    ipa = dict(zip(words, backend.phonemize_segments(list(words.values()), language))) if words else {}
    pieces = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            pieces.append(ipa.get(i, ""))
        else:
            marks = part.strip()
            pieces.append((" " if part[:1].isspace() else "") + marks + (" " if part[-1:].isspace() else ""))
    return collapse_whitespace("".join(pieces))
