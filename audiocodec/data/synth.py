"""A small multi-speaker speech + music corpus made offline, for tests and quick recipe runs.

Speech: espeak-ng voices (accents x voice variants, each speaker with its own pitch and speed) reading English
sentences generated from templates and word lists. Music: short pieces written as MIDI here and rendered by
fluidsynth with a General MIDI soundfont. Everything at 24 kHz mono 16-bit wav.

The valid and test splits hold speakers (voices / lead instrument families) and sentences that train never
sees. Given the seed, the corpus is the same on every run (for the same espeak-ng and soundfont versions).

Needs the Debian packages ``espeak-ng fluidsynth fluid-soundfont-gm`` (``egs/mini/local/install_tools.sh``).

>>> stats = build_corpus("data/mini", scale="toy", seed=0)     # data/mini/{train,valid,test}.jsonl
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import struct
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import soundfile as sf
import torch

from ..audio import PathLike, resample, save_audio
from ..errors import AudioCodecError
from .manifest import manifest_stats, write_manifest

log = logging.getLogger("audiocodec.data.synth")

SAMPLE_RATE = 24000
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/default.sf2")
APT_PACKAGES = ("espeak-ng", "fluidsynth", "fluid-soundfont-gm")


class ToolMissing(AudioCodecError, RuntimeError):
    """espeak-ng, fluidsynth or the soundfont is not installed."""


# -- tools -----------------------------------------------------------------------------------------------

def find_soundfont() -> Optional[str]:
    env = os.environ.get("AUDIOCODEC_SOUNDFONT")
    for p in ([env] if env else []) + list(SOUNDFONTS):
        if p and Path(p).is_file():
            return p
    return None


def missing_tools() -> list[str]:
    """The Debian packages among :data:`APT_PACKAGES` whose program or file is missing."""
    out = []
    if shutil.which("espeak-ng") is None:
        out.append("espeak-ng")
    if shutil.which("fluidsynth") is None:
        out.append("fluidsynth")
    if find_soundfont() is None:
        out.append("fluid-soundfont-gm")
    return out


def tool_versions() -> dict:
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:
            return None
    return {"espeak-ng": first_line(["espeak-ng", "--version"]),
            "fluidsynth": first_line(["fluidsynth", "--version"]), "soundfont": find_soundfont()}


# -- sentences -------------------------------------------------------------------------------------------

_NAMES = ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam",
          "Maya", "Nikolai", "Olivia", "Pedro", "Quinn", "Rosa", "Samuel", "Tara", "Umar", "Vera", "Walter",
          "Ximena", "Yusuf", "Zoe", "Mister Brown", "Doctor Patel", "Professor Lindqvist", "Aunt Martha"]
_ADJ = ["old", "tiny", "bright", "quiet", "heavy", "curious", "golden", "broken", "gentle", "crowded", "narrow",
        "ancient", "cheerful", "muddy", "silver", "enormous", "fragile", "noisy", "peaceful", "strange", "wooden",
        "frozen", "sleepy", "elegant", "rusty", "colorful", "distant", "humble", "wild", "clever"]
_NOUNS = ["lantern", "bicycle", "garden", "violin", "teapot", "library", "harbor", "mountain", "notebook",
          "umbrella", "bridge", "kitchen", "river", "telescope", "market", "orchestra", "blanket", "castle",
          "computer", "village", "ferry", "meadow", "piano", "tunnel", "island", "clock", "window", "camera",
          "forest", "train"]
_PLACES = ["the station", "the old museum", "the corner shop", "the village square", "the harbor", "the office",
           "the top of the hill", "the school library", "the concert hall", "the bakery", "the airport",
           "the riverbank", "the city park", "the train platform", "the farmers market", "the lighthouse"]
_VERBS_PAST = ["found", "painted", "repaired", "carried", "borrowed", "described", "noticed", "cleaned",
               "sold", "photographed", "measured", "forgot", "opened", "packed", "delivered", "tested"]
_VERBS = ["find", "paint", "repair", "carry", "borrow", "describe", "notice", "clean", "sell", "photograph",
          "measure", "open", "pack", "deliver", "test", "visit"]
_ADV = ["slowly", "carefully", "quickly", "quietly", "happily", "suddenly", "patiently", "proudly", "nervously",
        "gracefully", "eagerly", "reluctantly"]
_TIMES = ["this morning", "last night", "on Tuesday", "at noon", "before dawn", "after lunch", "in the spring",
          "yesterday evening", "every weekend", "during the storm", "in nineteen ninety four", "at half past seven"]
_WEATHER = ["raining", "snowing", "windy", "foggy", "sunny", "freezing", "humid", "stormy"]
_FEEL = ["tired", "delighted", "surprised", "worried", "hungry", "confused", "relieved", "excited"]
_FOODS = ["apples", "fresh bread", "tomato soup", "rice and beans", "chocolate cake", "green tea", "cheese",
          "lemonade", "roasted vegetables", "pancakes"]
_COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "gray", "pink"]
_UNITS = ["kilometers", "minutes", "dollars", "pages", "degrees", "meters", "hours", "people", "boxes", "songs"]

_TEMPLATES = [
    "The {adj} {noun} was {adv} {vpast} by {name} {time}.",
    "{name} {vpast} the {adj} {noun} near {place}.",
    "Did {name} really {verb} the {noun} {time}?",
    "Why is the {noun} at {place} so {adj}?",
    "Please {verb} the {color} {noun} before {name} arrives.",
    "It was {weather} {time}, so {name} stayed near {place}.",
    "We walked {num} {unit} to reach {place}.",
    "{name} said that the {noun} costs {num} {unit2}.",
    "What a {adj} {noun} you have, {name}!",
    "After the meeting, {name} felt {feel} and ate some {food}.",
    "There are {num} {color} {noun}s waiting at {place}.",
    "If it keeps {weather2}, we will {verb} the {noun} tomorrow.",
    "{name} and {name2} {vpast} a {adj} {noun} {time}.",
    "Could you tell me where {place} is?",
    "The {noun} that {name} {vpast} looked {adj} and {adj2}.",
    "Nobody expected the {adj} {noun} to arrive {time}.",
    "Bring {food}, a {color} {noun}, and the {adj} {noun2}.",
    "\"Wait here,\" {name} whispered, \"the {noun} is {adj}.\"",
    "Turn left at {place}, then walk {num} {unit} north.",
    "How many {noun}s did {name} {verb} {time}?",
    "Honestly, I think the {noun} is more {adj} than the {noun2}.",
    "On page {num}, {name} describes a {adj} {noun} by the sea.",
    "The train to {city} leaves at {hour} {ampm} from platform {small}.",
    "{name} was {feel} because the {noun} was {adj}.",
    "Never {verb} a {adj} {noun} {time}.",
    "Wow, the {noun} at {place} is {adj}!",
    "Is it true that {name} {vpast} {num} {noun}s?",
    "My favorite {noun} is the {color} one from {place}.",
    "Although it was {weather}, {name} {adv} {vpast} the {noun}.",
    "Call {name} at {phone} if the {noun} breaks again.",
]
_CITIES = ["Boston", "Glasgow", "Lisbon", "Nairobi", "Osaka", "Toronto", "Vienna", "Melbourne", "Lima", "Oslo"]


def _number_words(n: int) -> str:
    ones = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
            "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
    tens = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
    if n < 20:
        return ones[n]
    if n < 100:
        return tens[n // 10] + ("" if n % 10 == 0 else "-" + ones[n % 10])
    if n < 1000:
        rest = n % 100
        return ones[n // 100] + " hundred" + ("" if rest == 0 else " and " + _number_words(rest))
    return str(n)


def make_sentences(n: int = 300, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences from templates and word lists (statements, questions, exclamations,
    quotes, numbers, times), the same for the same ``(n, seed)``."""
    rng = random.Random(f"sentences-{seed}")
    out, seen = [], set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise RuntimeError(f"could not make {n} distinct sentences")
        tpl = _TEMPLATES[len(out) % len(_TEMPLATES)] if len(out) < len(_TEMPLATES) else rng.choice(_TEMPLATES)
        names = rng.sample(_NAMES, 2)
        adjs = rng.sample(_ADJ, 2)
        nouns = rng.sample(_NOUNS, 2)
        num = rng.choice([rng.randint(2, 12), rng.randint(13, 99), rng.randint(100, 999)])
        fields = {
            "name": names[0], "name2": names[1], "adj": adjs[0], "adj2": adjs[1], "noun": nouns[0],
            "noun2": nouns[1], "place": rng.choice(_PLACES), "vpast": rng.choice(_VERBS_PAST),
            "verb": rng.choice(_VERBS), "adv": rng.choice(_ADV), "time": rng.choice(_TIMES),
            "weather": rng.choice(_WEATHER), "weather2": rng.choice(["raining", "snowing"]),
            "feel": rng.choice(_FEEL), "food": rng.choice(_FOODS), "color": rng.choice(_COLORS),
            "num": rng.choice([str(num), _number_words(num)]), "unit": rng.choice(_UNITS),
            "unit2": rng.choice(["dollars", "euros", "pounds"]), "city": rng.choice(_CITIES),
            "hour": str(rng.randint(1, 12)), "ampm": rng.choice(["a.m.", "p.m."]), "small": str(rng.randint(1, 9)),
            "phone": " ".join(str(rng.randint(0, 9)) for _ in range(7)),
        }
        s = tpl.format(**fields)
        s = s[0].upper() + s[1:]
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# -- speakers --------------------------------------------------------------------------------------------

#: espeak-ng English voices (accents) and voice variants tried, in this order; those not installed are left out.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "croak", "adam", "Alex", "Alicia", "Andy", "Annie", "aunty", "belinda", "benjamin",
            "boris", "caleb", "david", "ed", "edward", "Gene", "grandma", "grandpa", "iven", "john", "linda", "max",
            "Michael", "paul", "quincy", "rob", "robert", "steph", "travis", "victor", "zac", "Lee", "Hugo", "Denis")


@dataclass
class Voice:
    speaker: str
    accent: str
    variant: Optional[str]
    pitch: int      # espeak -p, 0..99
    speed: int      # espeak -s, words per minute
    amplitude: int  # espeak -a
    gap: int        # espeak -g, extra pause between words (10 ms units)

    @property
    def name(self) -> str:
        # espeak-ng 1.51 ignores a variant after "en-gb" (en-gb+f2 renders exactly as en-gb); "en" is the
        # same British voice and honours it
        accent = "en" if self.accent == "en-gb" and self.variant else self.accent
        return accent + (f"+{self.variant}" if self.variant else "")


def available_voices() -> tuple[list[str], list[str]]:
    """(accents, variants) among :data:`ACCENTS` / :data:`VARIANTS` that this espeak-ng has."""
    def listing(arg):
        try:
            return subprocess.run(["espeak-ng", f"--voices={arg}"], capture_output=True, text=True,
                                  timeout=30).stdout
        except Exception:
            return ""
    langs = {line.split()[1] for line in listing("en").splitlines()[1:] if len(line.split()) > 4
             and not line.split()[4].startswith("mb/")}
    files = {line.split()[4].split("/")[-1] for line in listing("variant").splitlines()[1:]
             if len(line.split()) > 4}
    accents = [a for a in ACCENTS if a in langs] or ["en"]
    variants = [v for v in VARIANTS if v in files]
    return accents, variants


def make_voices(n: int, seed: int, accents: Sequence[str], variants: Sequence[str]) -> list[Voice]:
    """``n`` distinct speakers: accent x variant combinations (drawn without repeats), each with its own pitch,
    speed, loudness and word gap."""
    rng = random.Random(f"voices-{seed}")
    combos = [(a, v) for v in (list(variants) or [None]) for a in accents]
    rng.shuffle(combos)
    while len(combos) < n:   # more speakers than combinations: the same timbre at other pitches/speeds
        combos += combos[:n - len(combos)]
    voices = []
    for i in range(n):
        accent, variant = combos[i]
        voices.append(Voice(speaker=f"spk{i:03d}", accent=accent, variant=variant, pitch=rng.randint(15, 85),
                            speed=rng.randint(125, 210), amplitude=rng.randint(80, 160), gap=rng.choice([0, 0, 1, 2])))
    return voices


def render_speech(voice: Voice, text: str, out_wav: PathLike, rng: random.Random) -> float:
    """Speak ``text`` with ``voice`` (pitch and speed jittered a little per utterance) into a 24 kHz wav."""
    pitch = min(99, max(0, voice.pitch + rng.randint(-6, 6)))
    speed = max(80, voice.speed + rng.randint(-12, 12))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        cmd = ["espeak-ng", "-v", voice.name, "-p", str(pitch), "-s", str(speed), "-a", str(voice.amplitude),
               "-g", str(voice.gap), "-w", str(raw), "--", text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        data, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    return _finish(data, sr, out_wav, peak_db=rng.uniform(-9.0, -1.0))


def _finish(data: np.ndarray, sr: int, out_wav: PathLike, peak_db: float, trim_db: float = -50.0,
            pad_s: float = 0.08) -> float:
    """Mono, trim edge silence, resample to 24 kHz, normalise the peak, pad, write PCM_16; return seconds."""
    x = data.mean(axis=1) if data.ndim == 2 else data
    if x.size == 0 or not np.isfinite(x).all() or np.abs(x).max() <= 0:
        raise AudioCodecError(f"renderer produced no audio for {out_wav}")
    env = np.abs(x) > np.abs(x).max() * 10 ** (trim_db / 20)
    idx = np.flatnonzero(env)
    x = x[idx[0]: idx[-1] + 1]
    wav = torch.from_numpy(np.ascontiguousarray(x))[None]
    wav = resample(wav, sr, SAMPLE_RATE)
    wav = wav * (10 ** (peak_db / 20) / wav.abs().max().clamp_min(1e-9))
    pad = int(pad_s * SAMPLE_RATE)
    wav = torch.nn.functional.pad(wav, (pad, pad))
    save_audio(out_wav, wav, SAMPLE_RATE)
    return wav.shape[-1] / SAMPLE_RATE


# -- music -----------------------------------------------------------------------------------------------

def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


class MidiFile:
    """A minimal Standard MIDI File (format 1) writer: tempo, programs, notes."""

    def __init__(self, ticks_per_beat: int = 480):
        self.tpb = ticks_per_beat
        self.tracks: list[list[tuple[int, int, bytes]]] = [[]]   # track 0: tempo / meta

    def set_tempo(self, bpm: float, tick: int = 0) -> None:
        us = int(round(60_000_000 / bpm))
        self.tracks[0].append((tick, 0, b"\xff\x51\x03" + us.to_bytes(3, "big")))

    def time_signature(self, num: int, denom: int) -> None:
        self.tracks[0].append((0, 0, bytes([0xFF, 0x58, 0x04, num, int(math.log2(denom)), 24, 8])))

    def add_track(self, name: str, channel: int, program: Optional[int]) -> int:
        events = [(0, 0, b"\xff\x03" + _vlq(len(name.encode())) + name.encode())]
        if program is not None:
            events.append((0, 1, bytes([0xC0 | channel, program & 0x7F])))
        self.tracks.append(events)
        return len(self.tracks) - 1

    def note(self, track: int, channel: int, pitch: int, start: int, length: int, velocity: int) -> None:
        pitch, velocity = min(127, max(0, pitch)), min(127, max(1, velocity))
        self.tracks[track].append((start, 3, bytes([0x90 | channel, pitch, velocity])))
        self.tracks[track].append((start + max(1, length), 2, bytes([0x80 | channel, pitch, 0])))

    def to_bytes(self) -> bytes:
        out = b"MThd" + struct.pack(">IHHH", 6, 1, len(self.tracks), self.tpb)
        for events in self.tracks:
            body, now = b"", 0
            for tick, _, data in sorted(events, key=lambda e: (e[0], e[1])):
                body += _vlq(tick - now) + data
                now = tick
            body += b"\x00\xff\x2f\x00"
            out += b"MTrk" + struct.pack(">I", len(body)) + body
        return out

    def save(self, path: PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_bytes())
        return path


#: General MIDI families (programs 8k..8k+7) used as the "speaker" of music clips.
GM_FAMILIES = {"piano": 0, "chromatic": 8, "organ": 16, "guitar": 24, "bass": 32, "strings": 40,
               "ensemble": 48, "brass": 56, "reed": 64, "pipe": 72, "synthlead": 80, "synthpad": 88,
               "ethnic": 104}
_SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10], "dorian": [0, 2, 3, 5, 7, 9, 10],
           "mixolydian": [0, 2, 4, 5, 7, 9, 10], "pentatonic": [0, 2, 4, 7, 9], "blues": [0, 3, 5, 6, 7, 10]}
_ACCOMP = [0, 4, 5, 24, 25, 32, 33, 35, 48, 49, 88, 89, 19, 11]   # accompaniment programs
_DRUMS = {"kick": 36, "snare": 38, "hat": 42, "open_hat": 46, "ride": 51, "clap": 39}


def make_piece(family: str, seed: int, seconds: float) -> tuple[MidiFile, dict]:
    """A short piece: a melody on a program of ``family`` over chords, a bass line and sometimes drums."""
    rng = random.Random(f"piece-{family}-{seed}")
    bpm = rng.randint(70, 160)
    beats_per_bar = rng.choice([3, 4, 4, 4])
    scale_name = rng.choice(list(_SCALES))
    scale = _SCALES[scale_name]
    root = rng.randint(50, 62)
    lead_program = GM_FAMILIES[family] + rng.randint(0, 7)
    accomp_program = rng.choice(_ACCOMP)
    drums = rng.random() < 0.5
    m = MidiFile()
    tpb = m.tpb
    m.set_tempo(bpm)
    m.time_signature(beats_per_bar, 4)
    lead = m.add_track("lead", 0, lead_program)
    acc = m.add_track("chords", 1, accomp_program)
    bass = m.add_track("bass", 2, rng.choice([32, 33, 34, 38, 43]))
    drum = m.add_track("drums", 9, None) if drums else None
    total_beats = max(beats_per_bar, int(round(seconds * bpm / 60)))
    bars = math.ceil(total_beats / beats_per_bar)

    def degree(d: int, octave: int = 0) -> int:
        return root + 12 * (octave + d // len(scale)) + scale[d % len(scale)]

    progression = [rng.choice([0, 3, 4, 5, 1, 2]) for _ in range(4)]
    progression[0] = 0
    d = rng.randint(0, len(scale) - 1)
    for bar in range(bars):
        chord = progression[bar % len(progression)]
        t0 = bar * beats_per_bar * tpb
        vel = rng.randint(55, 85)
        style = rng.choice(["block", "arpeggio"])
        tones = [degree(chord), degree(chord + 2), degree(chord + 4)]
        if style == "block":
            for p in tones:
                m.note(acc, 1, p, t0, beats_per_bar * tpb - 20, vel)
        else:
            for b in range(beats_per_bar * 2):
                m.note(acc, 1, tones[b % 3] + (12 if b % 6 >= 3 else 0), t0 + b * tpb // 2, tpb // 2, vel - 5)
        for b in range(beats_per_bar):
            p = degree(chord, -1) - 12 + (7 if b % 2 else 0)
            m.note(bass, 2, p, t0 + b * tpb, tpb - 30, rng.randint(70, 95))
        t = t0
        while t < t0 + beats_per_bar * tpb:
            dur = rng.choice([tpb // 2, tpb // 2, tpb, tpb, tpb * 2, tpb // 4 * 3])
            d = max(-3, min(len(scale) * 2, d + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3])))
            if rng.random() < 0.85:
                m.note(lead, 0, degree(d, 1), t, int(dur * rng.uniform(0.7, 1.0)), rng.randint(70, 115))
            t += dur
        if drums:
            for b in range(beats_per_bar):
                tb = t0 + b * tpb
                m.note(drum, 9, _DRUMS["hat"], tb, tpb // 4, rng.randint(50, 80))
                m.note(drum, 9, _DRUMS["kick"] if b % 2 == 0 else _DRUMS["snare"], tb, tpb // 4,
                       rng.randint(80, 110))
    meta = {"family": family, "program": lead_program, "accompaniment": accomp_program, "tempo": bpm,
            "meter": f"{beats_per_bar}/4", "scale": scale_name, "root": root, "drums": drums}
    return m, meta


def render_midi(midi_path: PathLike, out_wav: PathLike, rng: random.Random, soundfont: Optional[str] = None,
                max_seconds: Optional[float] = None) -> float:
    """Render a MIDI file with fluidsynth (offline, no audio device) to a 24 kHz mono wav."""
    soundfont = soundfont or find_soundfont()
    if soundfont is None:
        raise ToolMissing("no General MIDI soundfont: install fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        cmd = ["fluidsynth", "-ni", "-q", "-F", str(raw), "-T", "wav", "-O", "float", "-r", str(SAMPLE_RATE),
               "-g", "0.5", soundfont, str(midi_path)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
        data, sr = sf.read(str(raw), dtype="float32", always_2d=True)
    if max_seconds is not None:
        data = data[: int(max_seconds * sr)]
        fade = min(len(data), int(0.3 * sr))
        data[len(data) - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)[:, None]
    return _finish(data, sr, out_wav, peak_db=rng.uniform(-6.0, -1.0), trim_db=-60.0, pad_s=0.02)


# -- the corpus ------------------------------------------------------------------------------------------

@dataclass
class Scale:
    """Sizes of one corpus scale: speakers per split, utterances per speaker, music clips per family."""
    speakers: tuple[int, int, int]      # train, valid, test
    utts_per_speaker: int
    families: tuple[int, int, int]      # music families in train, valid, test
    pieces_per_family: int
    sentences: int
    music_seconds: tuple[float, float] = (3.0, 8.0)


SCALES = {
    "toy": Scale(speakers=(4, 1, 1), utts_per_speaker=4, families=(4, 1, 1), pieces_per_family=1, sentences=300,
                 music_seconds=(2.0, 4.0)),
    "default": Scale(speakers=(24, 3, 3), utts_per_speaker=10, families=(9, 2, 2), pieces_per_family=5,
                     sentences=300),
    "large": Scale(speakers=(90, 10, 10), utts_per_speaker=30, families=(9, 2, 2), pieces_per_family=60,
                   sentences=1200),
    # for text-to-speech: the voices of "large", each reading 100 of 4,000 sentences; little music
    "tts": Scale(speakers=(90, 10, 10), utts_per_speaker=100, families=(9, 2, 2), pieces_per_family=1,
                 sentences=4000),
}


@dataclass
class _Job:
    kind: str
    id: str
    split: str
    speaker: str
    seed: int
    text: Optional[str] = None
    voice: Optional[Voice] = None
    family: Optional[str] = None
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)


def _split_list(items: list, sizes: Sequence[int]) -> list[list]:
    out, i = [], 0
    for n in sizes:
        out.append(items[i:i + n])
        i += n
    return out


def resolve_voices(accents: Optional[Sequence[str]], variants: Optional[Sequence[str]]) -> tuple:
    """``(accents, variants)``: the given ones, or what the installed espeak-ng offers."""
    if accents is None or variants is None:
        found = available_voices()
        accents = found[0] if accents is None else accents
        variants = found[1] if variants is None else variants
    return accents, variants


def held_out_split(n: int, rng: random.Random, held: int) -> dict:
    """Indices ``0..n-1`` shuffled by ``rng`` into ``{"test": held, "valid": held, "train": the rest}``."""
    order = list(range(n))
    rng.shuffle(order)
    return {"test": order[:held], "valid": order[held:2 * held], "train": order[2 * held:]}


def render_all(render, items: Sequence, workers: Optional[int] = None) -> list:
    """``[render(item) for item in items]`` on ``workers`` threads (default: CPU count, at most 8), with
    torch kept to one thread meanwhile (the renderers are external programs and numpy)."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(render, items))
    finally:
        torch.set_num_threads(torch_threads)


def plan_corpus(scale: str = "default", seed: int = 0, accents: Optional[Sequence[str]] = None,
                variants: Optional[Sequence[str]] = None) -> tuple[list[_Job], list[str], dict]:
    """Every clip to render (deterministic given the arguments), the sentences, and their split."""
    if scale not in SCALES:
        raise AudioCodecError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    sc = SCALES[scale]
    accents, variants = resolve_voices(accents, variants)
    rng = random.Random(f"plan-{scale}-{seed}")
    sentences = make_sentences(sc.sentences, seed)
    sent_split = held_out_split(len(sentences), rng, max(1, len(sentences) // 10))
    voices = make_voices(sum(sc.speakers), seed, accents, variants)
    voice_split = dict(zip(("train", "valid", "test"), _split_list(voices, sc.speakers)))
    families = sorted(GM_FAMILIES)
    rng.shuffle(families)
    if sum(sc.families) > len(families):
        raise AudioCodecError(f"scale {scale!r} asks for more music families than the {len(families)} known")
    family_split = dict(zip(("train", "valid", "test"), _split_list(families, sc.families)))
    jobs: list[_Job] = []
    for split in ("train", "valid", "test"):
        pool = sent_split[split]
        for voice in voice_split[split]:
            picks = rng.sample(pool, min(sc.utts_per_speaker, len(pool)))
            for k, s in enumerate(picks):
                jobs.append(_Job("speech", f"{voice.speaker}_{k:03d}", split, voice.speaker, rng.randrange(2**31),
                                 text=sentences[s], voice=voice, meta={"sentence": s}))
        for fam in family_split[split]:
            for k in range(sc.pieces_per_family):
                jobs.append(_Job("music", f"music-{fam}_{k:03d}", split, f"music-{fam}", rng.randrange(2**31),
                                 family=fam, seconds=rng.uniform(*sc.music_seconds)))
    split_of_sentence = {i: name for name, idx in sent_split.items() for i in idx}
    return jobs, sentences, split_of_sentence


def _render(job: _Job, out_dir: Path, soundfont: Optional[str]) -> dict:
    wav_path = out_dir / "wavs" / f"{job.id}.wav"
    rng = random.Random(job.seed)
    rec = {"id": job.id, "path": str(wav_path.resolve()), "speaker": job.speaker, "kind": job.kind}
    if job.kind == "speech":
        rec.update(text=job.text, language="en", voice=job.voice.name, pitch=job.voice.pitch,
                   speed=job.voice.speed)
        if not _usable(wav_path):
            render_speech(job.voice, job.text, wav_path, rng)
    else:
        midi, meta = make_piece(job.family, job.seed, job.seconds)
        midi_path = midi.save(out_dir / "midi" / f"{job.id}.mid")
        rec.update({k: v for k, v in meta.items()})
        rec["midi"] = str(midi_path.relative_to(out_dir))
        if not _usable(wav_path):
            render_midi(midi_path, wav_path, rng, soundfont, max_seconds=job.seconds + 1.5)
    info = sf.info(str(wav_path))
    rec.update(duration=round(info.frames / info.samplerate, 6), sample_rate=int(info.samplerate))
    return rec


def _usable(path: Path) -> bool:
    """A wav from an earlier run that can be kept (resume)."""
    try:
        info = sf.info(str(path))
        return info.samplerate == SAMPLE_RATE and info.frames > 0 and info.channels == 1
    except Exception:
        return False


def build_corpus(out_dir: PathLike, scale: str = "default", seed: int = 0, workers: Optional[int] = None,
                 force: bool = False) -> dict:
    """Render the corpus into ``out_dir`` (``wavs/``, ``midi/``, ``train/valid/test.jsonl``, ``sentences.txt``,
    ``speakers.json``, ``corpus.json``) and return its stats. Clips already rendered by an earlier run with the
    same settings are kept unless ``force``.

    Raises:
        ToolMissing: espeak-ng, fluidsynth or the soundfont is not installed.
    """
    missing = missing_tools()
    if missing:
        raise ToolMissing(f"missing: {', '.join(missing)}; install with `apt-get install {' '.join(APT_PACKAGES)}` "
                          "(egs/mini/local/install_tools.sh)")
    t0 = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"scale": scale, "seed": seed, "versions": tool_versions()}
    info_path = out_dir / "corpus.json"
    try:
        previous = json.loads(info_path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        previous = None
    if force or previous != settings:   # clips of other settings cannot be reused
        for sub in ("wavs", "midi"):
            if (out_dir / sub).is_dir():
                shutil.rmtree(out_dir / sub)
    info_path.write_text(json.dumps({"settings": settings, "complete": False}, indent=1))
    jobs, sentences, sent_split = plan_corpus(scale, seed)
    soundfont = find_soundfont()
    records = render_all(lambda j: _render(j, out_dir, soundfont), jobs, workers)
    by_split = {s: [r for r, j in zip(records, jobs) if j.split == s] for s in ("train", "valid", "test")}
    stats = {"settings": settings, "complete": True, "seconds": None, "splits": {}}
    for split, recs in by_split.items():
        path = write_manifest(out_dir / f"{split}.jsonl", recs)
        stats["splits"][split] = {"manifest": str(path), **manifest_stats(recs),
                                  "speech": sum(r["kind"] == "speech" for r in recs),
                                  "music": sum(r["kind"] == "music" for r in recs)}
    with open(out_dir / "sentences.txt", "w", encoding="utf-8") as f:
        for i, s in enumerate(sentences):
            f.write(f"{sent_split[i]}\t{s}\n")
    speakers = {}
    for j in jobs:
        if j.speaker not in speakers:
            speakers[j.speaker] = {"split": j.split, "kind": j.kind,
                                   **(asdict(j.voice) if j.voice else {"family": j.family})}
    (out_dir / "speakers.json").write_text(json.dumps(speakers, indent=1))
    stats["seconds"] = round(time.time() - t0, 2)
    info_path.write_text(json.dumps(stats, indent=1))
    log.info("mini corpus (%s) in %s: %s", scale, out_dir,
             ", ".join(f"{k} {v['clips']} clips" for k, v in stats["splits"].items()))
    return stats
