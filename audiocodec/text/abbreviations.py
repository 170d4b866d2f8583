"""Abbreviation tables: what English abbreviations expand to, and which dotted words end no sentence.

Keys are lower case and without the final period. Tables of other languages only list abbreviations
for sentence splitting; add a language by adding its entry to :data:`SENTENCE_ABBREVIATIONS`.
"""
from __future__ import annotations

#: Titles that stand before a name, so their period never ends a sentence.
ENGLISH_TITLES = {
    "mr": "mister", "mrs": "missus", "ms": "miz", "dr": "doctor", "prof": "professor", "rev": "reverend",
    "gen": "general", "capt": "captain", "lt": "lieutenant", "sgt": "sergeant", "col": "colonel",
    "gov": "governor", "sen": "senator", "rep": "representative", "hon": "honorable", "mt": "mount",
    "st": "saint",
}

#: Abbreviations that may also end a sentence ("... and Sons Ltd. The firm ...").
ENGLISH_ABBREVIATIONS = {
    "jr": "junior", "sr": "senior", "ave": "avenue", "rd": "road", "blvd": "boulevard", "co": "company",
    "corp": "corporation", "inc": "incorporated", "ltd": "limited", "bros": "brothers", "etc": "et cetera",
    "vs": "versus", "approx": "approximately", "dept": "department", "est": "established",
}

#: Dotted abbreviations, matched with all their periods.
ENGLISH_DOTTED = {"e.g": "for example", "i.e": "that is", "a.k.a": "also known as"}

#: Abbreviations read only when a number follows ("No. 5" -> "number five", "Jan. 21" -> "January 21").
ENGLISH_BEFORE_NUMBERS = {
    "no": "number", "nos": "numbers", "vol": "volume", "fig": "figure", "p": "page", "pp": "pages",
    "ch": "chapter", "jan": "january", "feb": "february", "mar": "march", "apr": "april", "jun": "june",
    "jul": "july", "aug": "august", "sep": "september", "sept": "september", "oct": "october",
    "nov": "november", "dec": "december",
}

#: "St." after a capitalised word is a street, "Dr." a drive.
ENGLISH_AFTER_NAMES = {"st": "street", "dr": "drive"}

#: Per language: (abbreviations whose period never ends a sentence, abbreviations that may end one,
#: abbreviations that end none when a number follows). Lower case, without the final period.
SENTENCE_ABBREVIATIONS: dict[str, tuple[frozenset, frozenset, frozenset]] = {
    "en": (frozenset(ENGLISH_TITLES) | frozenset(ENGLISH_DOTTED),
           frozenset(ENGLISH_ABBREVIATIONS) | {"a.m", "p.m", "u.s", "u.k"},
           frozenset(ENGLISH_BEFORE_NUMBERS)),
    "de": (frozenset({"hr", "fr", "dr", "prof", "z.b", "d.h", "u.a", "bzw", "vgl", "ca", "st"}),
           frozenset({"usw", "etc", "u.s.w"}), frozenset({"nr", "s", "bd"})),
    "fr": (frozenset({"m", "mme", "mlle", "dr", "pr", "st", "ste", "p.ex"}),
           frozenset({"etc", "cf"}), frozenset({"no", "p", "vol"})),
    "es": (frozenset({"sr", "sra", "srta", "dr", "dra", "d", "dña", "p.ej", "ud", "uds", "lic"}),
           frozenset({"etc", "ej"}), frozenset({"no", "núm", "pág", "vol"})),
}
