"""A small text-to-song corpus made offline, with separate vocal and accompaniment stems.

Each song has a genre (instruments, tempo range, modes, drum groove, chord and bass styles), a key, a tempo,
a singer (an espeak-ng voice), a few short lyric lines made from word lists, and a melody on the key's scale
that follows the chords. The accompaniment (chords, pad, bass, drums) is written as MIDI here and rendered
by fluidsynth; the vocal is sung word by word: espeak-ng speaks each word on a flat pitch (SSML
``<prosody range="0">``), and a pitch-synchronous overlap-add (TD-PSOLA) moves it to the note's pitch (with
a light vibrato) and stretches its voiced part to the note's length, on the beat grid. ``mixture.wav`` is
``vocal.wav + accompaniment.wav`` sample for sample (before 16-bit rounding): the stems are stored at the
level they have in the mix, and the vocal-to-accompaniment level ``vocal_gain`` (RMS ratio) varies per song.
Descriptions ("upbeat pop with piano, electric bass and drums, 112 bpm, A minor, female voice") are made
from the metadata. Everything is 24 kHz mono 16-bit wav, 5 to 10 s per song.

Layout of ``build_song_corpus(out)``::

    out/songs/<id>/{mixture,vocal,accompaniment}.wav, song.mid
    out/{train,valid,test}.jsonl                  mixture: id, path, duration, lyrics, description, speaker
                                                  (the singer), genre, bpm, key, vocal_gain, ...
    out/{split}.vocal.jsonl, {split}.accompaniment.jsonl     the stems, same ids (vocal records: notes)
    out/lyrics.txt, singers.json, corpus.json

Valid and test lyrics are lines train never sees; the test split also has singers train never hears. The
corpus is the same on every run for the same seed (and espeak-ng / soundfont versions); songs already
rendered by an earlier run with the same settings are kept.

>>> stats = build_song_corpus("data/songs", scale="toy", seed=0)

Needs the Debian packages ``espeak-ng fluidsynth fluid-soundfont-gm`` (``egs/mini/local/install_tools.sh``).
"""
from __future__ import annotations

import functools
import json
import logging
import math
import random
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf
import torch

from ..audio import PathLike, resample, save_audio
from ..errors import AudioCodecError, ConfigError
from .manifest import manifest_stats, read_manifest, write_manifest
from .synth import (APT_PACKAGES, SAMPLE_RATE, MidiFile, ToolMissing, find_soundfont,
                    held_out_split, missing_tools, render_all, resolve_voices, tool_versions)

log = logging.getLogger("audiocodec.data.song_synth")

#: bumped when the songs rendered for the same (scale, seed) change, so that old renders are not reused
FORMAT_VERSION = 1
#: no song is longer (the mini song recipe trains on windows of 10 s at 75 Hz)
MAX_SECONDS = 9.8
STEMS = ("vocal", "accompaniment")
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}


# -- genres ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Genre:
    """How a genre is played. Instruments are ``(name in descriptions, General MIDI program)``."""
    name: str
    bpm: tuple[int, int]
    modes: tuple[str, ...]
    chords: tuple[tuple[str, int], ...]     # the harmony instrument (one is drawn)
    chord_styles: tuple[str, ...]           # block | arpeggio | strum | power | comp | stab | skank
    bass: tuple[tuple[str, int], ...]
    bass_style: str                         # root | root8 | root5 | walking | synth | funk
    drums: Optional[str]                    # groove name (see _GROOVES) or None
    pads: tuple = ()                        # optional sustained layer ((name, program), ...), maybe none
    sevenths: bool = False
    swing: bool = False


GENRES = {g.name: g for g in (
    Genre("pop", (92, 124), ("major", "minor"), (("piano", 0), ("electric piano", 4), ("acoustic guitar", 25)),
          ("block", "arpeggio"), (("electric bass", 33), ("synth bass", 38)), "root", "pop",
          pads=(("strings", 48), ("synth pad", 89))),
    Genre("rock", (108, 148), ("major", "minor"), (("overdriven guitar", 29), ("distorted guitar", 30)),
          ("power",), (("electric bass", 34),), "root8", "rock"),
    Genre("folk", (80, 112), ("major",), (("acoustic guitar", 25), ("nylon guitar", 24), ("banjo", 105)),
          ("strum", "arpeggio"), (("acoustic bass", 32),), "root5", None, pads=(("accordion", 21),)),
    Genre("jazz", (88, 140), ("major", "minor"), (("piano", 0), ("jazz guitar", 26), ("vibraphone", 11)),
          ("comp",), (("upright bass", 32),), "walking", "swing", sevenths=True, swing=True),
    Genre("electronic", (118, 132), ("minor", "major"), (("polysynth", 90), ("saw synth", 81), ("square synth", 80)),
          ("stab", "arpeggio"), (("synth bass", 38), ("synth bass", 39)), "synth", "four",
          pads=(("warm pad", 89), ("new age pad", 88))),
    Genre("ballad", (70, 84), ("major",), (("piano", 0), ("electric piano", 4)), ("arpeggio",),
          (("fretless bass", 35),), "root", "soft", pads=(("strings", 48), ("choir pad", 91))),
    Genre("reggae", (72, 92), ("major", "minor"), (("organ", 16), ("clean guitar", 27)), ("skank",),
          (("electric bass", 33),), "root", "onedrop"),
    Genre("country", (92, 124), ("major",), (("steel guitar", 25), ("clean guitar", 27)), ("strum",),
          (("electric bass", 33), ("acoustic bass", 32)), "root5", "pop", pads=(("fiddle", 40),)),
    Genre("blues", (72, 100), ("major",), (("electric piano", 4), ("organ", 16), ("clean guitar", 27)),
          ("comp", "block"), (("electric bass", 33),), "walking", "shuffle", sevenths=True, swing=True),
    Genre("funk", (96, 116), ("minor", "major"), (("clavinet", 7), ("muted guitar", 28)), ("stab",),
          (("slap bass", 36),), "funk", "funk", pads=(("brass section", 61),), sevenths=True),
)}

#: chord progressions (scale degrees, one chord per bar)
_PROGRESSIONS = {"major": ((0, 4, 5, 3), (0, 3, 4, 3), (0, 5, 3, 4), (0, 3, 0, 4), (5, 3, 0, 4), (0, 4, 3, 4)),
                 "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4))}
_GENRE_PROGRESSIONS = {"jazz": {"major": ((1, 4, 0, 0), (0, 5, 1, 4)), "minor": ((0, 3, 1, 4), (0, 5, 1, 4))},
                       "blues": {"major": ((0, 0, 3, 0), (3, 3, 0, 4), (0, 3, 0, 4))}}
#: drum grooves: instrument -> 16th steps of a 4/4 bar (swing grooves are shifted to triplets when played)
_GROOVES = {
    "pop": {36: (0, 8, 10), 38: (4, 12), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
    "rock": {36: (0, 6, 8), 38: (4, 12), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
    "four": {36: (0, 4, 8, 12), 39: (4, 12), 46: (2, 6, 10, 14), 42: (1, 3, 5, 7, 9, 11, 13, 15)},
    "swing": {51: (0, 4, 6, 8, 12, 14), 44: (4, 12), 36: (0,)},
    "shuffle": {36: (0, 8), 38: (4, 12), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
    "onedrop": {36: (8,), 37: (8,), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
    "funk": {36: (0, 3, 10), 38: (4, 12), 42: tuple(range(16))},
    "soft": {36: (0, 8), 37: (4, 12), 42: (0, 4, 8, 12)},
}
_CRASH = 49


# -- lyrics ----------------------------------------------------------------------------------------------

_L_NOUNS = ["heart", "night", "sun", "rain", "fire", "road", "sky", "sea", "moon", "star", "dream", "light",
            "song", "home", "wind", "town", "soul", "hand", "door", "stone", "rose", "gold", "snow", "storm",
            "wave", "bird", "tree", "dawn", "river", "summer", "city", "shadow", "window", "garden", "morning",
            "ocean", "mountain", "flower", "winter", "silver", "candle", "highway", "feather", "thunder"]
_L_ADJ = ["blue", "cold", "wild", "bright", "lost", "dark", "sweet", "long", "old", "slow", "warm", "pale",
          "soft", "young", "deep", "free", "gray", "true", "high", "golden", "lonely", "broken", "silent",
          "endless", "shining", "empty", "gentle", "restless"]
_L_VERBS = ["hold", "find", "feel", "chase", "call", "need", "keep", "see", "love", "miss", "follow", "carry",
            "remember", "want", "touch", "light"]
_L_VERBS_I = ["dance", "run", "sing", "fly", "burn", "wait", "fall", "shine", "dream", "walk", "turn", "cry",
              "rise", "stay", "wander", "breathe"]
_L_SUBJ = ["I", "we", "you", "they"]
_L_TIMES = ["tonight", "again", "today", "all night", "forever", "once more", "till dawn", "right now",
            "so long", "away"]
_L_PLACES = ["the night", "the rain", "the dark", "the light", "the street", "the sea", "the town", "the fire",
             "the sky", "the wind", "the cold", "the crowd"]
_LYRIC_TEMPLATES = [
    "{subj} {verb} the {adj} {noun}", "{adj} {noun} {time}", "{subj} {verbi} {time}", "in the {adj} {noun}",
    "{subj} {verb} you {time}", "{noun} on the {noun2}", "{subj} {verbi} into {place}", "oh my {adj} {noun}",
    "{adj} {noun} and {adj2} {noun2}", "{subj} can {verb} the {noun}", "{noun} of {adj} {noun2}",
    "don't {verb} my {noun}", "{subj} {verbi} and {subj2} {verbi2}", "under the {adj} {noun}",
    "take me to {place}", "{subj} {verbi} in {place}", "{adj} {noun} {verbi}", "hey {adj} {noun}",
    "{subj} will {verbi} {time}", "a {adj} {noun} in {place}",
]


def make_lyric_lines(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct short lyric lines (3 to 6 words) from templates and word lists, the same for the same
    ``(n, seed)``."""
    if n < 1:
        raise ConfigError(f"need at least one lyric line, got {n}")
    rng = random.Random(f"lyrics-{seed}")
    out, seen, attempts = [], set(), 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n:
            raise ConfigError(f"could not make {n} distinct lyric lines (the word lists are too small)")
        subj = rng.sample(_L_SUBJ, 2)
        adjs, nouns, verbs_i = rng.sample(_L_ADJ, 2), rng.sample(_L_NOUNS, 2), rng.sample(_L_VERBS_I, 2)
        line = rng.choice(_LYRIC_TEMPLATES).format(
            subj=subj[0], subj2=subj[1], adj=adjs[0], adj2=adjs[1], noun=nouns[0], noun2=nouns[1],
            verb=rng.choice(_L_VERBS), verbi=verbs_i[0], verbi2=verbs_i[1], time=rng.choice(_L_TIMES),
            place=rng.choice(_L_PLACES))
        line = line[0].upper() + line[1:]
        if line not in seen and 3 <= len(line.split()) <= 6:
            seen.add(line)
            out.append(line)
    return out


def lyric_words(line: str) -> list[str]:
    """The sung words of a line (letters and apostrophes)."""
    return re.findall(r"[A-Za-z']+", line)


def _syllables(word: str) -> int:
    return max(1, len(re.findall(r"[aeiouy]+", word.lower().rstrip("e") or word.lower())))


# -- singers ---------------------------------------------------------------------------------------------

_FEMALE = ("f1", "f2", "f3", "f4", "f5", "Annie", "Alicia", "belinda", "linda", "steph", "anika", "aunty")
_MALE = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "adam", "Andy", "benjamin", "boris", "caleb", "david",
         "ed", "edward", "john", "max", "Michael", "paul", "rob", "robert", "travis", "victor", "Lee")
#: languages whose name espeak-ng 1.51 does not combine with a +variant (it falls back to its default voice)
_ESPEAK_FILE = {"en-gb": "en"}


@dataclass
class Singer:
    """An espeak-ng voice singing in a register: ``pitch`` (espeak ``-p``) sets the flat pitch it speaks
    words at, ``center`` the MIDI note its melodies are centred on."""
    speaker: str
    accent: str
    variant: Optional[str]
    gender: str
    pitch: int
    speed: int
    center: int

    @property
    def name(self) -> str:
        """The espeak-ng ``-v`` argument (``en-gb+f3`` would be read as the default voice: ``en+f3``)."""
        accent = _ESPEAK_FILE.get(self.accent, self.accent) if self.variant else self.accent
        return accent + (f"+{self.variant}" if self.variant else "")


def make_singers(n: int, seed: int, accents: Sequence[str], variants: Sequence[str]) -> list[Singer]:
    """``n`` singers alternating female / male voices, each on a voice variant no earlier singer of that
    gender has (while there are enough) in an accent drawn at random, with its own register and speed.
    Without any known variant, every singer is espeak-ng's default (male) voice in some accent."""
    rng = random.Random(f"singers-{seed}")
    accents = sorted(accents) or ["en"]
    found = set(variants)
    pools = {g: [v for v in names if v in found] for g, names in (("female", _FEMALE), ("male", _MALE))}
    for pool in pools.values():
        rng.shuffle(pool)
    genders = [g for g in ("female", "male") if pools[g]] or ["male"]
    if not pools["male"] and "male" in genders:
        pools["male"] = [None]
    used = {g: 0 for g in genders}
    out = []
    for i in range(n):
        gender = genders[i % len(genders)]
        variant = pools[gender][used[gender] % len(pools[gender])]
        used[gender] += 1
        if gender == "female":
            pitch, center = rng.randint(62, 88), rng.randint(57, 62)
        else:
            pitch, center = rng.randint(80, 99), rng.randint(48, 52)
        out.append(Singer(f"singer{i:02d}", rng.choice(accents), variant, gender, pitch, rng.randint(100, 140),
                          center))
    return out


# -- singing ---------------------------------------------------------------------------------------------

def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def hz_to_midi(hz: float) -> float:
    return 69.0 + 12.0 * math.log2(hz / 440.0)


def speak_flat(singer: Singer, word: str) -> np.ndarray:
    """espeak-ng says ``word`` on one flat pitch (SSML range 0); 24 kHz, edge silence trimmed."""
    if not word.strip():
        raise ConfigError("nothing to sing: empty word")
    ssml = f'<speak><prosody range="0">{escape(word)}</prosody></speak>'
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "w.wav"
        cmd = ["espeak-ng", "-v", singer.name, "-p", str(singer.pitch), "-s", str(singer.speed), "-m",
               "-w", str(raw), "--", ssml]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        data, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    x = data.mean(axis=1)
    if x.size == 0 or not np.isfinite(x).all() or np.abs(x).max() <= 0:
        raise AudioCodecError(f"espeak-ng ({singer.name}) produced no audio for {word!r}")
    x = resample(torch.from_numpy(np.ascontiguousarray(x)), sr, SAMPLE_RATE).numpy().astype(np.float64)
    # trim edge silence by 5 ms frame energy
    hop = SAMPLE_RATE // 200
    n = len(x) // hop
    energy = np.sqrt((x[:n * hop].reshape(n, hop) ** 2).mean(1) + 1e-12)
    on = np.flatnonzero(energy > energy.max() * 10 ** (-40 / 20))
    return x[on[0] * hop:(on[-1] + 1) * hop]


def estimate_period(x: np.ndarray, fmin: float = 60.0, fmax: float = 600.0, sample_rate: int = SAMPLE_RATE,
                    guess: Optional[float] = None) -> float:
    """The pitch period (in samples, fractional) of a flat-pitched signal: the lag of the largest normalised
    autocorrelation within ``[sr / fmax, sr / fmin]`` (or +-30 % around ``guess``), shorter lags winning
    near-ties (no octave-down errors); parabolic interpolation."""
    lo, hi = int(sample_rate / fmax), int(math.ceil(sample_rate / fmin))
    if guess is not None:
        lo, hi = max(lo, int(guess * 0.7)), min(hi, int(math.ceil(guess * 1.3)))
    if len(x) < 2 * hi + 2:
        raise AudioCodecError(f"signal too short ({len(x)} samples) to find a pitch period")
    lags = np.arange(lo - 1, hi + 2)
    r = np.array([np.dot(x[:-k], x[k:]) / math.sqrt(np.dot(x[:-k], x[:-k]) * np.dot(x[k:], x[k:]) + 1e-12)
                  for k in lags])
    inner = r[1:-1]
    best = int(np.argmax(inner))
    for i in range(len(inner)):       # the first peak close to the best one
        if inner[i] >= 0.9 * inner[best] and inner[i] >= r[i] and inner[i] >= r[i + 2]:
            best = i
            break
    a, b, c = r[best], r[best + 1], r[best + 2]
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0
    return float(lags[best + 1] + max(-0.5, min(0.5, shift)))


def _voiced_frames(x: np.ndarray, period: float, hop: int, win: int) -> np.ndarray:
    """Per hop: normalised correlation at the pitch lag > 0.5 and energy within 35 dB of the loudest."""
    lag = int(round(period))
    n_frames = max(1, int(math.ceil(len(x) / hop)))
    pad = np.concatenate([x, np.zeros(win + lag + hop)])
    prod = np.concatenate([[0.0], np.cumsum(pad[:-lag] * pad[lag:])])
    sq = np.concatenate([[0.0], np.cumsum(pad * pad)])
    starts = np.arange(n_frames) * hop
    num = prod[starts + win] - prod[starts]
    e0 = sq[starts + win] - sq[starts]
    e1 = sq[starts + lag + win] - sq[starts + lag]
    corr = num / np.sqrt(e0 * e1 + 1e-12)
    return (corr > 0.5) & (e0 > e0.max() * 10 ** (-35 / 10))


def psola(x: np.ndarray, period: float, f0_out: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Time-domain pitch-synchronous overlap-add: ``x`` (flat pitch, ``period`` samples) re-pitched to
    ``f0_out`` (Hz per output sample; its length is the output length). The voiced part is stretched (or
    squeezed) to fill the output and unvoiced sounds (consonants) keep their length when they fit; grains are
    two analysis periods long (Hann) and keep the formants."""
    n_out = len(f0_out)
    if n_out < 1:
        return np.zeros(0)
    hop, win = sample_rate // 200, sample_rate // 50
    voiced = _voiced_frames(x, period, hop, win)
    # analysis marks: one per period, snapped to the waveform's peaks where voiced
    half = int(round(period / 4))
    marks, m = [], int(np.argmax(x[:int(period) + 1]))
    while m < len(x):
        marks.append(m)
        nxt = marks[-1] + period
        lo, hi = int(nxt) - half, int(nxt) + half + 1
        if hi >= len(x):
            break
        m = lo + int(np.argmax(x[lo:hi])) if voiced[min(len(voiced) - 1, int(nxt) // hop)] else int(round(nxt))
    marks = np.asarray(marks)
    # time map (output sample -> input sample): stretch voiced frames only, when that is enough
    frame_len = np.full(len(voiced), float(hop))
    frame_len[-1] = len(x) - hop * (len(voiced) - 1)
    v_len, u_len = frame_len[voiced].sum(), frame_len[~voiced].sum()
    if v_len >= 0.25 * len(x) and n_out >= u_len + 0.3 * v_len:
        scale = np.where(voiced, (n_out - u_len) / v_len, 1.0)
    else:
        scale = np.full(len(voiced), n_out / len(x))
    cum_in = np.concatenate([[0.0], np.cumsum(frame_len)])
    cum_out = np.concatenate([[0.0], np.cumsum(frame_len * scale)])
    # synthesis
    L = int(round(period))
    window = np.hanning(2 * L + 1)
    xp = np.concatenate([np.zeros(L), x, np.zeros(L + 1)])
    y = np.zeros(n_out + 2 * L + 2)
    wsum = np.zeros_like(y)
    t = 0.0
    while t < n_out:
        ti = float(np.interp(t, cum_out, cum_in))
        k = min(int(np.searchsorted(marks, ti)), len(marks) - 1)
        a = marks[k - 1] if k > 0 and abs(marks[k - 1] - ti) <= abs(marks[k] - ti) else marks[k]
        pos = int(round(t))
        y[pos:pos + 2 * L + 1] += xp[a:a + 2 * L + 1] * window
        wsum[pos:pos + 2 * L + 1] += window
        is_voiced = voiced[min(len(voiced) - 1, int(ti) // hop)]
        t += sample_rate / f0_out[min(n_out - 1, pos)] if is_voiced else period
    y, wsum = y[L:L + n_out], wsum[L:L + n_out]
    return y / np.maximum(wsum, 0.5)


def note_f0(midi: float, n: int, vibrato_cents: float = 30.0, rate_hz: float = 5.5,
            sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The f0 curve (Hz per sample) of a sung note: the note's pitch with a vibrato that fades in after
    0.15 s."""
    t = np.arange(n) / sample_rate
    depth = vibrato_cents * np.clip((t - 0.15) / 0.2, 0.0, 1.0)
    return midi_to_hz(midi) * 2.0 ** (depth * np.sin(2 * math.pi * rate_hz * t) / 1200.0)


@functools.lru_cache(maxsize=256)
def _singer_period(singer_key: tuple) -> float:
    """The period of a singer's flat pitch (measured once on 'la')."""
    singer = Singer(*singer_key)
    x = speak_flat(singer, "la")
    return estimate_period(x)


def sing_word(singer: Singer, word: str, midi: float, seconds: float, vibrato_cents: float = 30.0) -> np.ndarray:
    """``word`` sung by ``singer`` on MIDI note ``midi`` (fractional ok) for exactly ``seconds`` (24 kHz),
    with short fades at both ends."""
    if not seconds > 0:
        raise ConfigError(f"a note must last more than 0 s, got {seconds!r}")
    x = speak_flat(singer, word)
    guess = _singer_period(tuple(asdict(singer).values()))
    try:
        period = estimate_period(x, guess=guess)
    except AudioCodecError:
        period = guess
    n = max(1, int(round(seconds * SAMPLE_RATE)))
    y = psola(x, period, note_f0(midi, n, vibrato_cents if seconds > 0.4 else 0.0))
    fade_in, fade_out = min(n // 4, SAMPLE_RATE // 200), min(n // 3, SAMPLE_RATE // 25)
    y[:fade_in] *= np.linspace(0.0, 1.0, fade_in)
    if fade_out:
        y[-fade_out:] *= np.linspace(1.0, 0.0, fade_out)
    peak = np.abs(y).max()
    return y / peak if peak > 0 else y


# -- song plans ------------------------------------------------------------------------------------------

@dataclass
class Note:
    word: str
    beat: float       # onset, in beats from the song's start (swing applied)
    beats: float      # length in beats
    midi: int


@dataclass
class SongPlan:
    id: str
    split: str
    seed: int
    genre: str
    bpm: int
    root: int             # pitch class of the tonic
    mode: str
    singer: Singer
    lines: list[str]
    notes: list[Note]
    progression: tuple
    chord_instrument: tuple
    chord_style: str
    bass_instrument: tuple
    pad_instrument: Optional[tuple]
    total_beats: float
    tail_seconds: float
    vocal_gain_db: float
    peak_db: float
    description: str = ""

    @property
    def beat_seconds(self) -> float:
        return 60.0 / self.bpm

    @property
    def num_samples(self) -> int:
        return int(round((self.total_beats * self.beat_seconds + self.tail_seconds) * SAMPLE_RATE))

    @property
    def key(self) -> str:
        return f"{KEY_NAMES[self.root]} {self.mode}"

    @property
    def lyrics(self) -> str:
        return "\n".join(self.lines)

    @property
    def has_drums(self) -> bool:
        return GENRES[self.genre].drums is not None

    @property
    def instruments(self) -> list[str]:
        names = [self.chord_instrument[0]]
        if self.pad_instrument is not None:
            names.append(self.pad_instrument[0])
        names.append(self.bass_instrument[0])
        if self.has_drums:
            names.append("drums")
        out = []
        for n in names:
            if n not in out:
                out.append(n)
        return out


def _swing(beat: float, swing: bool) -> float:
    """Off-beat eighths played late (triplet feel) in swing genres."""
    if swing and abs(beat % 1 - 0.5) < 1e-9:
        return beat + 1.0 / 6.0
    return beat


def _bar_degree(progression: Sequence[int], bar: int, last_bar: int) -> int:
    """The chord (scale degree) of a bar: the progression, and the tonic on the final bar."""
    return 0 if bar >= last_bar else progression[bar % len(progression)]


def _chord_tones(root: int, mode: str, degree: int, sevenths: bool) -> list[int]:
    """Pitch classes of the chord on ``degree`` of the key."""
    steps = SCALE_STEPS[mode]
    return [(root + steps[(degree + k) % 7]) % 12 for k in ((0, 2, 4, 6) if sevenths else (0, 2, 4))]


def _rhythm(rng: random.Random, words: list[str], beat_s: float, compact: bool, swing: bool = False) -> list[float]:
    """Note lengths (beats) of a line: at least 0.3 s each, longer for longer words, the last held (whole
    beats with swing, whose off-beat eighths are short)."""
    choices = [0.5, 1.0, 1.0, 1.5] if not compact else [0.5, 1.0]
    if swing:
        choices = [d for d in choices if d >= 1.0]
    out = []
    for i, w in enumerate(words):
        ok = [d for d in choices if d * beat_s >= 0.3 and (d >= 1.0 or _syllables(w) == 1)] or [max(choices)]
        out.append(min(ok) if compact else rng.choice(ok))
    out[-1] = (1.0 if compact else rng.choice([1.5, 2.0, 2.0])) if beat_s >= 0.5 else 2.0
    return out


def _melody(rng: random.Random, plan_notes: list[tuple[str, float, float]], root: int, mode: str,
            progression: tuple, center: int, sevenths: bool, line_starts: Sequence[int] = (0,),
            last_bar: int = 1 << 30) -> list[int]:
    """MIDI pitches on the key's scale within a fifth around ``center``: each line rises then falls (or the
    other way), mostly by steps and small leaps, on chord tones on strong beats and at line ends."""
    steps = SCALE_STEPS[mode]
    scale = [p for p in range(center - 7, center + 8) if (p - root) % 12 in steps]
    leap_weight = {0: 0.25, 1: 1.0, 2: 0.8, 3: 0.4, 4: 0.2}
    idx = min(range(len(scale)), key=lambda i: (abs(scale[i] - center), i))
    bounds = list(line_starts) + [len(plan_notes)]
    out = []
    for ln in range(len(bounds) - 1):
        first, stop = bounds[ln], bounds[ln + 1]
        arch = rng.choice((1, 1, -1))
        for i in range(first, stop):
            word, beat, beats = plan_notes[i]
            chord = _chord_tones(root, mode, _bar_degree(progression, int(beat // 4), last_bar), sevenths)[:3]
            strong = abs(beat % 2) < 1e-6 or i == stop - 1 or beats >= 2
            direction = arch if (i - first) < (stop - first) / 2 else -arch
            cands, weights = [], []
            for j in range(max(0, idx - 4), min(len(scale), idx + 5)):
                if strong and scale[j] % 12 not in chord:
                    continue
                w = leap_weight[abs(j - idx)] * (1.7 if (j - idx) * direction > 0 else 1.0)
                w *= 0.4 if abs(scale[j] - center) > 5 else 1.0
                cands.append(j)
                weights.append(w)
            if not cands:
                cands, weights = [idx], [1.0]
            idx = rng.choices(cands, weights)[0]
            out.append(scale[idx])
    return out


def describe(plan: SongPlan, rng: random.Random) -> str:
    """A text description of a song from its metadata (genre, mood, instruments, tempo, key, voice)."""
    if plan.bpm < 86:
        moods = ("slow", "gentle", "mellow") if plan.mode == "major" else ("slow", "melancholic", "sad")
    elif plan.bpm < 114:
        moods = ("relaxed", "warm", "groovy") if plan.mode == "major" else ("moody", "dark", "brooding")
    else:
        moods = ("upbeat", "energetic", "bright") if plan.mode == "major" else ("driving", "intense", "urgent")
    mood = rng.choice(moods)
    inst = plan.instruments
    inst_text = inst[0] if len(inst) == 1 else ", ".join(inst[:-1]) + " and " + inst[-1]
    voice = plan.singer.gender
    templates = (
        "{mood} {genre} with {inst}, {bpm} bpm, {key}, {voice} voice",
        "{a_mood} {genre} song in {key} at {bpm} bpm with {inst}, sung by a {voice} voice",
        "{genre}, {mood}, {bpm} bpm, {key}; {inst}; {voice} vocals",
    )
    a_mood = ("an " if mood[0] in "aeiou" else "a ") + mood
    return rng.choice(templates).format(mood=mood, a_mood=a_mood, genre=plan.genre, inst=inst_text, bpm=plan.bpm,
                                        key=plan.key, voice=voice)


def plan_song(song_id: str, split: str, seed: int, genre: str, singer: Singer, line_pool: Sequence[str],
              seconds: tuple[float, float]) -> SongPlan:
    """Everything about one song but its audio: tempo, key, instruments, lyric lines (drawn from
    ``line_pool``, as many as fit in a length drawn from ``seconds``), melody, levels."""
    if genre not in GENRES:
        raise ConfigError(f"unknown genre {genre!r}; known: {', '.join(GENRES)}")
    if not line_pool:
        raise ConfigError("no lyric lines to draw from")
    lo_s, hi_s = seconds
    if not 0 < lo_s <= hi_s:
        raise ConfigError(f"song seconds must be 0 < min <= max, got {seconds!r}")
    g = GENRES[genre]
    rng = random.Random(seed)
    bpm = rng.randint(*g.bpm)
    beat_s = 60.0 / bpm
    mode = rng.choice(g.modes)
    root = rng.randrange(12)
    progs = _GENRE_PROGRESSIONS.get(genre, {}).get(mode) or _PROGRESSIONS[mode]
    progression = rng.choice(progs)
    intro, outro = 2.0, 2.0
    tail = 0.4
    target = rng.uniform(lo_s, hi_s)
    limit = min(hi_s, MAX_SECONDS)
    max_beats = (limit - tail) / beat_s
    # lines: as many as fit the target length (at least one), each on a whole number of beats
    candidates = list(line_pool)
    rng.shuffle(candidates)
    lines, notes_plan, line_starts, beat = [], [], [], intro
    for line in candidates[:50]:
        words = lyric_words(line)
        if not words:
            continue
        for compact in (False, True):
            durs = _rhythm(rng, words, beat_s, compact, g.swing)
            span = float(math.ceil(sum(durs) + 0.5))
            if beat + span + outro <= max_beats:
                break
        else:
            continue
        line_starts.append(len(notes_plan))
        t = beat
        for w, d in zip(words, durs):
            notes_plan.append((w, t, d))
            t += d
        lines.append(line)
        beat += span
        if ((beat + outro) * beat_s + tail >= target and len(lines) >= 2) or len(lines) >= 4:
            break
    if not lines:
        raise ConfigError(f"no lyric line fits a song of at most {limit} s at {bpm} bpm")
    while (beat + outro) * beat_s + tail < lo_s and (beat + outro + 1) * beat_s + tail <= limit:
        outro += 1.0          # too short: a longer ending
    total_beats = beat + outro
    center = singer.center
    pitches = _melody(rng, notes_plan, root, mode, progression, center, g.sevenths, line_starts,
                      last_bar=int(math.ceil(total_beats / 4)) - 1)
    notes = []
    for (w, b, d), p in zip(notes_plan, pitches):
        start = _swing(b, g.swing)
        end = _swing(b + d, g.swing)
        notes.append(Note(w, round(start, 6), round(end - start, 6), int(p)))
    pad = rng.choice(g.pads) if g.pads and rng.random() < 0.6 else None
    plan = SongPlan(id=song_id, split=split, seed=seed, genre=genre, bpm=bpm, root=root, mode=mode, singer=singer,
                    lines=lines, notes=notes, progression=tuple(progression), chord_instrument=rng.choice(g.chords),
                    chord_style=rng.choice(g.chord_styles), bass_instrument=rng.choice(g.bass), pad_instrument=pad,
                    total_beats=total_beats, tail_seconds=tail, vocal_gain_db=rng.uniform(-3.0, 5.0),
                    peak_db=rng.uniform(-3.0, -1.0))
    plan.description = describe(plan, rng)
    return plan


# -- accompaniment ---------------------------------------------------------------------------------------

def song_midi(plan: SongPlan) -> MidiFile:
    """The accompaniment of a song as MIDI: chords (the genre's style), an optional pad, bass, drums."""
    g = GENRES[plan.genre]
    rng = random.Random(f"midi-{plan.seed}")
    m = MidiFile()
    tpb = m.tpb
    m.set_tempo(plan.bpm)
    m.time_signature(4, 4)
    chords = m.add_track("chords", 0, plan.chord_instrument[1])
    pad = m.add_track("pad", 1, plan.pad_instrument[1]) if plan.pad_instrument else None
    bass = m.add_track("bass", 2, plan.bass_instrument[1])
    drums = m.add_track("drums", 9, None) if g.drums else None
    total = plan.total_beats
    bars = int(math.ceil(total / 4))

    def tick(beat: float) -> int:
        return int(round(_swing(beat, g.swing) * tpb))

    def voicing(degree: int, low: int = 52) -> list[int]:
        pcs = _chord_tones(plan.root, plan.mode, degree, g.sevenths)
        out, prev = [], low - 1
        for pc in pcs:
            p = prev + 1 + (pc - prev - 1) % 12
            out.append(p)
            prev = p
        return out

    def note(track, ch, pitch, b0, beats, vel):
        b1 = min(b0 + beats, total)
        if b1 > b0:
            m.note(track, ch, pitch, tick(b0), max(1, tick(b1) - tick(b0) - 10), vel)

    for bar in range(bars):
        b0 = 4.0 * bar
        last = bar == bars - 1
        degree = _bar_degree(plan.progression, bar, bars - 1)
        nxt = _bar_degree(plan.progression, bar + 1, bars - 1)
        tones = voicing(degree)
        vel = rng.randint(60, 80)
        style = "block" if last else plan.chord_style
        if style == "block":
            for p in tones:
                note(chords, 0, p, b0, 4, vel)
        elif style == "arpeggio":
            seq = tones + [tones[0] + 12]
            for k in range(8):
                note(chords, 0, seq[(k if k < 4 else 7 - k) % len(seq)], b0 + 0.5 * k, 0.5, vel - 5)
        elif style == "strum":
            for k, (at, down) in enumerate(((0, 1), (1, 1), (1.5, 0), (2.5, 0), (3, 1), (3.5, 0))):
                order = tones + [tones[0] + 12] if down else [tones[0] + 12] + tones[::-1]
                for j, p in enumerate(order):
                    m.note(chords, 0, p, tick(b0 + at) + 12 * j, max(1, tpb // 2 - 12 * j), vel - (0 if down else 12))
        elif style == "power":
            r = tones[0] - 12 if tones[0] >= 52 else tones[0]
            for k in range(8):
                for p in (r, r + 7, r + 12):
                    note(chords, 0, p, b0 + 0.5 * k, 0.45, vel + (8 if k % 2 == 0 else 0))
        elif style == "comp":
            for at in sorted(rng.sample([0, 1, 1.5, 2, 2.5, 3, 3.5], 3)):
                for p in tones:
                    note(chords, 0, p, b0 + at, rng.choice([0.5, 1.0]), vel)
        elif style == "stab":
            for at in (0.5, 1.5, 2.5, 3.5) if rng.random() < 0.5 else (0, 0.75, 1.5, 2.5, 3.25):
                for p in tones:
                    note(chords, 0, p + 12, b0 + at, 0.25, vel + 5)
        elif style == "skank":
            for at in (0.5, 1.5, 2.5, 3.5):
                for p in tones:
                    note(chords, 0, p + 12, b0 + at, 0.3, vel)
        if pad is not None:
            for p in voicing(degree, 60):
                note(pad, 1, p, b0, 4, rng.randint(35, 50))
        # bass
        r = 36 + (tones[0] - 36) % 12
        fifth = r + 7
        bvel = rng.randint(80, 100)
        if last or g.bass_style == "root":
            note(bass, 2, r, b0, 2, bvel)
            note(bass, 2, r, b0 + 2, 2 if not last else 2, bvel - 10)
        elif g.bass_style == "root8":
            for k in range(8):
                note(bass, 2, r, b0 + 0.5 * k, 0.45, bvel - (0 if k % 2 == 0 else 10))
        elif g.bass_style == "root5":
            for k, p in enumerate((r, fifth, r, fifth)):
                note(bass, 2, p if p < 55 else p - 12, b0 + k, 0.9, bvel)
        elif g.bass_style == "walking":
            target = 36 + (voicing(nxt)[0] - 36) % 12
            steps = SCALE_STEPS[plan.mode]
            walk = [r]
            for k in range(1, 4):
                cands = [p for p in range(r - 5, r + 13) if (p - plan.root) % 12 in steps and p != walk[-1]]
                aim = walk[-1] + (target - walk[-1]) / (4 - k)
                walk.append(min(cands, key=lambda p: abs(p - aim) + rng.random()))
            for k, p in enumerate(walk):
                note(bass, 2, p, b0 + k, 0.9, bvel)
        elif g.bass_style == "synth":
            for k in range(8):
                note(bass, 2, r + (12 if k % 2 else 0), b0 + 0.5 * k, 0.4, bvel)
        elif g.bass_style == "funk":
            for at, p in ((0, r), (0.75, r), (1.5, r + 12), (2, r), (2.75, fifth), (3.5, r + 10)):
                note(bass, 2, p, b0 + at, 0.25, bvel)
        # drums
        if drums is not None:
            groove = _GROOVES[g.drums]
            if bar == 0 or last:
                note(drums, 9, _CRASH, b0, 1, 90)
            if last:
                note(drums, 9, 36, b0, 1, 100)
                continue
            for inst, steps16 in groove.items():
                for s in steps16:
                    vel_d = rng.randint(85, 110) if inst in (36, 38, 39) else rng.randint(50, 80)
                    note(drums, 9, inst, b0 + s / 4.0, 0.25, vel_d)
    return m


def render_midi_raw(midi_path: PathLike, soundfont: Optional[str] = None, gain: float = 0.5) -> np.ndarray:
    """fluidsynth (offline) -> mono float64 at 24 kHz, untrimmed (time 0 of the MIDI file is sample 0)."""
    soundfont = soundfont or find_soundfont()
    if soundfont is None:
        raise ToolMissing("no General MIDI soundfont: install fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        cmd = ["fluidsynth", "-ni", "-q", "-F", str(raw), "-T", "wav", "-O", "float", "-r", str(SAMPLE_RATE),
               "-g", str(gain), soundfont, str(midi_path)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        data, sr = sf.read(str(raw), dtype="float64", always_2d=True)
    x = data.mean(axis=1)
    if sr != SAMPLE_RATE:
        x = resample(torch.from_numpy(x).float(), sr, SAMPLE_RATE).double().numpy()
    if x.size == 0 or not np.isfinite(x).all() or np.abs(x).max() <= 0:
        raise AudioCodecError(f"fluidsynth produced no audio for {midi_path}")
    return x


# -- rendering -------------------------------------------------------------------------------------------

def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def _highpass(x: np.ndarray, cutoff: float = 70.0) -> np.ndarray:
    """Remove the rumble below ``cutoff`` Hz (grain DC) from the vocal (a biquad high-pass)."""
    import torchaudio.functional as AF
    peak = max(float(np.abs(x).max()), 1e-9)     # torchaudio clamps the output to [-1, 1]
    y = AF.highpass_biquad(torch.from_numpy(x / (4 * peak)).double()[None], SAMPLE_RATE, cutoff)
    return y[0].numpy() * (4 * peak)


def _sung_seconds(note: Note, beat_seconds: float) -> float:
    """How long a note is sung: most of its length (a short breath before the next)."""
    return max(0.2, note.beats * beat_seconds * 0.94)


def render_song(plan: SongPlan, song_dir: PathLike, soundfont: Optional[str] = None) -> dict:
    """Render a plan into ``song_dir/{accompaniment,vocal,mixture}.wav`` (+ ``song.mid``); returns
    ``{"vocal_gain": rms(vocal) / rms(accompaniment)}`` as written."""
    song_dir = Path(song_dir)
    song_dir.mkdir(parents=True, exist_ok=True)
    n = plan.num_samples
    midi_path = song_midi(plan).save(song_dir / "song.mid")
    acc = render_midi_raw(midi_path, soundfont)[:n]
    acc = np.pad(acc, (0, n - len(acc)))
    fade = int(0.3 * SAMPLE_RATE)
    acc[-fade:] *= np.linspace(1.0, 0.0, fade)
    vocal = np.zeros(n)
    sec = plan.beat_seconds
    for note in plan.notes:
        start = int(round(note.beat * sec * SAMPLE_RATE))
        y = sing_word(plan.singer, note.word, note.midi, _sung_seconds(note, sec))
        stop = min(n, start + len(y))
        vocal[start:stop] += y[:stop - start]
    vocal = _highpass(vocal)
    acc *= 0.1 / _rms(acc)
    vocal *= _rms(acc) * 10 ** (plan.vocal_gain_db / 20) / _rms(vocal)
    mix = acc + vocal
    scale = min(10 ** (plan.peak_db / 20) / np.abs(mix).max(), 0.99 / max(np.abs(acc).max(), np.abs(vocal).max()))
    acc, vocal, mix = acc * scale, vocal * scale, mix * scale
    for name, x in (("accompaniment", acc), ("vocal", vocal), ("mixture", mix)):   # mixture last: resume marker
        save_audio(song_dir / f"{name}.wav", torch.from_numpy(x).float()[None], SAMPLE_RATE)
    return {"vocal_gain": _rms(vocal) / _rms(acc)}


def _rendered(song_dir: Path) -> Optional[int]:
    """Frames of a complete earlier render (three mono 24 kHz wavs of the same length), else None."""
    frames = set()
    for name in ("mixture",) + STEMS:
        try:
            info = sf.info(str(song_dir / f"{name}.wav"))
        except Exception:
            return None
        if info.samplerate != SAMPLE_RATE or info.channels != 1 or info.frames <= 0:
            return None
        frames.add(info.frames)
    return frames.pop() if len(frames) == 1 else None


def _song_records(plan: SongPlan, song_dir: Path, frames: int) -> dict:
    duration = round(frames / SAMPLE_RATE, 6)
    common = {"id": plan.id, "duration": duration, "sample_rate": SAMPLE_RATE, "speaker": plan.singer.speaker,
              "lyrics": plan.lyrics, "description": plan.description, "genre": plan.genre, "bpm": plan.bpm,
              "key": plan.key}
    gain = float(10 ** (plan.vocal_gain_db / 20))
    sec = plan.beat_seconds
    mixture = {**common, "path": str((song_dir / "mixture.wav").resolve()), "vocal_gain": round(gain, 6),
               "gender": plan.singer.gender, "voice": plan.singer.name, "instruments": plan.instruments}
    vocal = {**common, "path": str((song_dir / "vocal.wav").resolve()), "gender": plan.singer.gender,
             "voice": plan.singer.name,
             "notes": [{"word": nt.word, "start": round(nt.beat * sec, 4),
                        "duration": round(_sung_seconds(nt, sec), 4), "midi": nt.midi} for nt in plan.notes]}
    accompaniment = {**common, "path": str((song_dir / "accompaniment.wav").resolve()), "instruments": plan.instruments,
                     "midi": f"songs/{plan.id}/song.mid"}
    return {"mixture": mixture, "vocal": vocal, "accompaniment": accompaniment}


def _render_job(plan: SongPlan, out_dir: Path, soundfont: Optional[str]) -> dict:
    song_dir = out_dir / "songs" / plan.id
    frames = _rendered(song_dir)
    if frames != plan.num_samples:
        render_song(plan, song_dir, soundfont)
        frames = _rendered(song_dir)
        if frames is None:
            raise AudioCodecError(f"{song_dir}: rendering left incomplete files")
    return _song_records(plan, song_dir, frames)


# -- the corpus ------------------------------------------------------------------------------------------

@dataclass
class SongScale:
    """Sizes of a song corpus: songs per split, singers heard in train (and valid / test), singers only
    in test, distinct lyric lines (a tenth held out for valid and for test), and song lengths."""
    songs: tuple[int, int, int]
    singers: int
    unseen_singers: int
    lines: int
    seconds: tuple[float, float] = (5.0, MAX_SECONDS)


SCALES = {
    "toy": SongScale(songs=(8, 2, 2), singers=3, unseen_singers=1, lines=60, seconds=(5.0, 8.0)),
    "default": SongScale(songs=(240, 30, 30), singers=10, unseen_singers=2, lines=600),
    "large": SongScale(songs=(2700, 150, 150), singers=24, unseen_singers=4, lines=3000),
}


def plan_song_corpus(scale: str = "default", seed: int = 0, accents: Optional[Sequence[str]] = None,
                     variants: Optional[Sequence[str]] = None) -> tuple[list[SongPlan], list[str], dict]:
    """Every song to render (deterministic given the arguments), the lyric lines and the split of each."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    sc = SCALES[scale]
    accents, variants = resolve_voices(accents, variants)
    rng = random.Random(f"song-plan-{scale}-{seed}")
    lines = make_lyric_lines(sc.lines, seed)
    line_split = held_out_split(len(lines), rng, max(4, len(lines) // 10))
    singers = make_singers(sc.singers + sc.unseen_singers, seed, accents, variants)
    seen, unseen = singers[:sc.singers], singers[sc.singers:]
    plans = []
    genres = sorted(GENRES)
    for split, count in zip(("train", "valid", "test"), sc.songs):
        pool = [lines[i] for i in sorted(line_split[split])]
        order_g = genres[:]
        rng.shuffle(order_g)
        for k in range(count):
            if split == "test" and unseen and k % 2 == 0:
                singer = unseen[(k // 2) % len(unseen)]
            else:
                singer = seen[(k if split == "train" else rng.randrange(len(seen))) % len(seen)]
            genre = order_g[k % len(order_g)]
            plans.append(plan_song(f"{split}-{k:04d}", split, rng.randrange(2 ** 31), genre, singer, pool,
                                   sc.seconds))
    split_of_line = {lines[i]: name for name, idx in line_split.items() for i in idx}
    return plans, lines, split_of_line


def build_song_corpus(out_dir: PathLike, scale: str = "default", seed: int = 0, workers: Optional[int] = None,
                      force: bool = False) -> dict:
    """Render the song corpus into ``out_dir`` (see the module doc) and return its stats. Songs already
    rendered by an earlier run with the same settings are kept unless ``force``.

    Raises:
        ToolMissing: espeak-ng, fluidsynth or the soundfont is not installed.
        ConfigError: an unknown scale.
    """
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive int, got {workers!r}")
    missing = missing_tools()
    if missing:
        raise ToolMissing(f"missing: {', '.join(missing)}; install with `apt-get install {' '.join(APT_PACKAGES)}` "
                          "(egs/mini/local/install_tools.sh)")
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"scale": scale, "seed": seed, "format": FORMAT_VERSION, "versions": tool_versions()}
    info_path = out_dir / "corpus.json"
    try:
        previous = json.loads(info_path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        previous = None
    if (force or previous != settings) and (out_dir / "songs").is_dir():   # renders of other settings
        shutil.rmtree(out_dir / "songs")
    info_path.write_text(json.dumps({"settings": settings, "complete": False}, indent=1))
    plans, lines, line_split = plan_song_corpus(scale, seed)
    soundfont = find_soundfont()
    records = render_all(lambda p: _render_job(p, out_dir, soundfont), plans, workers)
    stats = {"settings": settings, "complete": True, "seconds": None, "splits": {}}
    for split in ("train", "valid", "test"):
        recs = [r for r, p in zip(records, plans) if p.split == split]
        paths = {}
        for kind in ("mixture",) + STEMS:
            name = f"{split}.jsonl" if kind == "mixture" else f"{split}.{kind}.jsonl"
            paths[kind] = str(write_manifest(out_dir / name, [r[kind] for r in recs]))
        mixture = [r["mixture"] for r in recs]
        stats["splits"][split] = {"manifests": paths, **manifest_stats(mixture),
                                  "genres": sorted({r["genre"] for r in mixture})}
    with open(out_dir / "lyrics.txt", "w", encoding="utf-8") as f:
        for line in lines:
            f.write(f"{line_split[line]}\t{line}\n")
    singers = {}
    for p in plans:
        entry = singers.setdefault(p.singer.speaker, {**asdict(p.singer), "splits": []})
        if p.split not in entry["splits"]:
            entry["splits"].append(p.split)
    (out_dir / "singers.json").write_text(json.dumps(singers, indent=1))
    stats["seconds"] = round(time.time() - t0, 2)
    info_path.write_text(json.dumps(stats, indent=1))
    log.info("song corpus (%s) in %s: %s (%.1f s)", scale, out_dir,
             ", ".join(f"{k} {v['clips']} songs" for k, v in stats["splits"].items()), stats["seconds"])
    return stats


# -- tokens for song_lm (stage 1 of egs/mini/song/run.sh) -----------------------------------------------

def song_token_jobs(data_dir: PathLike, tokens_dir: PathLike, splits: Sequence[str] = ("train", "valid")) -> list:
    """``(manifest, token folder)`` pairs in the layout ``song_lm`` reads: ``<tokens>/<split>`` for the
    mixtures and ``<tokens>/<split>/{vocal,accompaniment}`` for the stems.

    Raises:
        ConfigError: a manifest is missing.
    """
    data_dir, tokens_dir = Path(data_dir), Path(tokens_dir)
    jobs = []
    for split in splits:
        for kind in ("mixture",) + STEMS:
            manifest = data_dir / (f"{split}.jsonl" if kind == "mixture" else f"{split}.{kind}.jsonl")
            if not manifest.is_file():
                raise ConfigError(f"{manifest} is missing: build the song corpus first (make_song_corpus.py)")
            jobs.append((manifest, tokens_dir / split if kind == "mixture" else tokens_dir / split / kind))
    return jobs


def extract_song_tokens(data_dir: PathLike, tokens_dir: PathLike, codec: str = "wavtokenizer-75-small-mini",
                        splits: Sequence[str] = ("train", "valid"), device: str = "cpu",
                        batch_size: int = 16) -> dict:
    """Encode the mixtures and stems of ``splits`` with one codec loaded once (what ``audiocodec
    extract-tokens`` does for each of :func:`song_token_jobs`, resumable the same way).

    Raises:
        AudioCodecError: a clip failed to encode (the message names the first ones).
    """
    from ..cli import resolve_model
    from .extract import extract_tokens
    jobs = song_token_jobs(data_dir, tokens_dir, splits)
    model = resolve_model(codec, device)
    out = {}
    for manifest, folder in jobs:
        stats = extract_tokens(manifest, folder, model, batch_size=batch_size, num_workers=0)
        if stats["failed"]:
            raise AudioCodecError(f"{manifest}: {len(stats['failed'])} clip(s) failed to encode: "
                                  f"{dict(list(stats['failed'].items())[:3])}")
        out[str(folder)] = {"encoded": stats["encoded"], "skipped_existing": stats["skipped_existing"]}
        log.info("%s -> %s: %d encoded, %d already there", manifest, folder, stats["encoded"],
                 stats["skipped_existing"])
    return out


# -- generating the test songs (stage 3 of egs/mini/song/run.sh) -------------------------------------------

def _note_intervals(manifest: Path, records: list[dict]) -> dict:
    """``{id: [(start, end), ...]}`` seconds of the sung notes of each song, from the records' ``notes`` or
    from the vocal manifest next to ``manifest`` (``test.jsonl`` -> ``test.vocal.jsonl``); songs without are left
    out."""
    notes = {r["id"]: r["notes"] for r in records if r.get("notes")}
    vocal = manifest.with_name(f"{manifest.stem}.vocal.jsonl")
    if vocal.is_file():
        for r in read_manifest(vocal):
            if r.get("notes") and r.get("id") not in notes:
                notes[r["id"]] = r["notes"]
    return {k: [(float(n["start"]), float(n["start"]) + float(n["duration"])) for n in v] for k, v in notes.items()}


def _lyric_timing(tracks: dict, sample_rate: int, notes: dict, song_id: str, other_id: str, reference_vocal,
                  root: Path) -> Optional[dict]:
    """The stem check of one generated song (see :func:`generate_test_songs`); None without note times."""
    from ..metrics.signal import interval_energy_contrast
    if song_id not in notes or other_id not in notes or other_id == song_id:
        return None
    track = "vocal" if "vocal" in tracks else "mixture"
    wav = tracks[track]
    try:
        out = {"track": track, "own": round(interval_energy_contrast(wav, sample_rate, notes[song_id]), 3),
               "shuffled": round(interval_energy_contrast(wav, sample_rate, notes[other_id]), 3)}
    except ConfigError:   # the notes cover none or all of a (short) generated song
        return None
    try:
        ref, ref_sr = sf.read(str(Path(root, reference_vocal)), dtype="float32", always_2d=True)
        out["reference"] = round(interval_energy_contrast(torch.from_numpy(ref.T), ref_sr, notes[song_id]), 3)
    except Exception:   # no reference vocal stem: the check stands without it
        pass
    return out


def _voice_prompts(records: list[dict], manifest: Path, seconds: float, how: str) -> dict:
    """A reference voice per test song: ``other``: the singing of the same singer in another song of the
    corpus (from its first note), ``self``: the song's own vocal stem, ``none``: no prompt."""
    if how == "none":
        return {}
    base = manifest.name[:-len(".jsonl")]
    pool = []
    for path in sorted(manifest.parent.glob("*.vocal.jsonl")):
        if how == "self" and path.name != f"{base}.vocal.jsonl":
            continue
        pool += read_manifest(path)
    out = {}
    for rec in records:
        same = [v for v in pool if v.get("speaker") == rec.get("speaker")
                and (v["id"] == rec["id"] if how == "self" else v["id"] != rec["id"])]
        if not same:
            continue
        v = same[0]
        start = v["notes"][0]["start"] if v.get("notes") else 0.0
        wav, sr = sf.read(v["path"], dtype="float32", always_2d=True)
        out[rec["id"]] = (torch.from_numpy(wav.mean(1)[int(start * sr):int((start + seconds) * sr)].copy()), sr)
    return out


def generate_test_songs(manifest: PathLike, model: PathLike, out_dir: PathLike, device: str = "cpu",
                        codec: Optional[str] = None, voice: str = "other", limit: Optional[int] = None,
                        batch_size: int = 4, seed: int = 0, **options) -> dict:
    """Sing the lyrics + description of each song of a (test) mixture manifest with a trained song model,
    as long as the reference song, and write ``out_dir/<id>.wav`` (+ ``<id>.vocal.wav``,
    ``<id>.accompaniment.wav`` for dual-track models) and ``out_dir/metrics.json``: per song the duration, the
    RMS of the mixture and of each stem, and the log-mel distance (:func:`~audiocodec.metrics.mel_distance`,
    over the shorter of the two) of the generated mixture (and stems) to the reference's; and the stem check
    ``lyric_timing``: how much louder the generated vocal stem (the mixture for single-track modes) is while
    the reference song sings its words than between them (:func:`~audiocodec.metrics.interval_energy_contrast`
    over the note times of the vocal manifest, dB), against the same for the note times of another test song
    (``shuffled``: what a voice that ignores the lyric timing gets) and for the reference vocal itself.

    ``voice``: ``other`` (the singer's voice from another song of the corpus, when the model takes voice
    prompts), ``self`` or ``none``. ``options``: :class:`~audiocodec.song.SongOptions` fields (``cfg_scale``,
    ``top_k``, ``temperature``, ...).
    """
    from ..metrics.signal import align, mel_distance
    from ..song import SongGenerator
    from ..song.generate import _options
    if voice not in ("other", "self", "none"):
        raise ConfigError(f"voice must be 'other', 'self' or 'none', got {voice!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    manifest, out_dir = Path(manifest), Path(out_dir)
    records = read_manifest(manifest)
    if limit is not None:
        records = records[:int(limit)]
    bad = [r.get("id") for r in records if not str(r.get("lyrics") or "").strip()]
    if not records or bad:
        raise ConfigError(f"{manifest}: " + (f"songs without lyrics: {bad[:5]}" if bad else "no songs"))
    gen = SongGenerator.load(model, codec=codec, device=device)
    has_voice = gen.model.conditioner.has_voice
    prompts = _voice_prompts(records, manifest, float(gen.model.conditioner.voice_seconds or 3.0),
                             voice) if has_voice else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    stems_of = {rec["id"]: {k: rec.get(k) or str(Path(rec["path"]).with_name(f"{k}.wav")) for k in STEMS}
                for rec in records}
    notes = _note_intervals(manifest, records)
    ids = [r["id"] for r in records]
    others = {a: b for a, b in zip(ids, ids[1:] + ids[:1])}   # the shuffled pairing of the stem check
    items, t0 = [], time.time()
    for i in range(0, len(records), batch_size):
        batch = records[i:i + batch_size]
        voices = None
        if prompts:
            voices = []
            for rec in batch:
                if rec["id"] in prompts:
                    wav, sr = prompts[rec["id"]]
                    wav = resample(wav, sr, gen.sample_rate) if sr != gen.sample_rate else wav
                    voices.append(wav)
                else:
                    voices.append(None)
        opts = _options({"duration": max(float(r["duration"]) for r in batch), "seed": seed + i, **options})
        tokens = gen.generate_tokens([r["lyrics"] for r in batch], [r.get("description") or "" for r in batch],
                                     voices, opts)
        for rec, tok in zip(batch, tokens):
            song = gen.decode(tok)
            n = min(song.audio.shape[-1], int(round(float(rec["duration"]) * song.sample_rate)))
            tracks = {"mixture": song.audio[:n], **{k: v[:n] for k, v in (song.stems or {}).items()}}
            item = {"id": rec["id"], "duration": round(n / song.sample_rate, 4),
                    "reference_duration": rec["duration"], "generated_frames": song.frames, "rms": {},
                    "mel_distance": {}}
            for name, wav in tracks.items():
                path = out_dir / (f"{rec['id']}.wav" if name == "mixture" else f"{rec['id']}.{name}.wav")
                save_audio(path, wav[None], song.sample_rate)
                item["rms"][name] = round(float(wav.pow(2).mean().sqrt()), 6)
                ref_path = rec["path"] if name == "mixture" else stems_of[rec["id"]][name]
                try:
                    ref, ref_sr = sf.read(str(Path(manifest.parent, ref_path)), dtype="float32", always_2d=True)
                except Exception:   # no reference stem: nothing to compare
                    continue
                r, h = align(torch.from_numpy(ref.mean(1)), wav.float(), ref_sr, song.sample_rate)
                if r.shape[-1] >= 2048:
                    item["mel_distance"][name] = round(float(mel_distance(r, h, ref_sr)), 4)
            timing = _lyric_timing(tracks, song.sample_rate, notes, rec["id"], others[rec["id"]],
                                   stems_of[rec["id"]]["vocal"], manifest.parent)
            if timing:
                item["lyric_timing"] = timing
            item["voice_prompt"] = rec["id"] in prompts
            items.append(item)
    summary = {"songs": len(items), "seconds": round(time.time() - t0, 2),
               "duration": round(float(np.mean([it["duration"] for it in items])), 4)}
    for key in ("rms", "mel_distance"):
        names = sorted({k for it in items for k in it[key]})
        summary[key] = {k: round(float(np.mean([it[key][k] for it in items if k in it[key]])), 6) for k in names}
    timed = [it["lyric_timing"] for it in items if "lyric_timing" in it]
    if timed:
        summary["lyric_timing"] = {
            "track": timed[0]["track"], "songs": len(timed),
            **{k: round(float(np.mean([t[k] for t in timed if k in t])), 3) for k in ("own", "shuffled", "reference")},
            "own_above_shuffled": round(float(np.mean([t["own"] > t["shuffled"] for t in timed])), 3)}
    result = {"model": str(model), "manifest": str(manifest), "mode": gen.model.mode, "summary": summary,
              "items": items}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1))
    return result
