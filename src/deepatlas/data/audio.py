"""Audio: the embedded `tones` clips, users' WAV files (stdlib `wave`), and μ-law companding.

`tones`: 240 one-second clips at 8 kHz, a third each of
    sums of 1–3 sines (100–1,000 Hz, random amplitudes and phases),
    linear chirps (a sweep between two frequencies in 100–1,500 Hz),
    note sequences (4–8 notes of the A minor pentatonic scale, 220–880 Hz, each with a short attack and decay),
seeded per clip and split by clip 60/20/20. Waves are float32 in [−1, 1].
"""
from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.errors import DeepAtlasError

SAMPLE_RATE = 8000
N_CLIPS = 240
CLIP_SECONDS = 1.0
PENTATONIC = [220.0 * 2 ** (s / 12) for s in (0, 3, 5, 7, 10, 12, 15, 17, 19, 22, 24)]  # A3 .. A5


# ---- μ-law --------------------------------------------------------------------------------

def mu_law_encode(x: Tensor, classes: int = 256) -> Tensor:
    """Waves in [−1, 1] -> class ids in [0, classes): F(x) = sign(x)·ln(1 + μ|x|)/ln(1 + μ), μ = classes − 1,
    then uniform quantization of F(x) (ITU-T G.711; van den Oord et al. 2016, eq. 2)."""
    mu = classes - 1
    x = x.clamp(-1, 1)
    f = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((f + 1) / 2 * mu + 0.5).floor().long().clamp(0, mu)


def mu_law_decode(q: Tensor, classes: int = 256) -> Tensor:
    """Class ids -> waves: the inverse of `mu_law_encode` up to its quantization."""
    mu = classes - 1
    f = 2 * q.float() / mu - 1
    return torch.sign(f) * ((1 + mu) ** f.abs() - 1) / mu


# ---- the embedded clips -------------------------------------------------------------------

def _clip(i: int) -> np.ndarray:
    rng = np.random.default_rng(10_000 + i)
    n = int(SAMPLE_RATE * CLIP_SECONDS)
    t = np.arange(n) / SAMPLE_RATE
    kind = i % 3
    if kind == 0:  # a chord of sines
        k = rng.integers(1, 4)
        f, a, p = rng.uniform(100, 1000, k), rng.uniform(0.3, 1.0, k), rng.uniform(0, 2 * np.pi, k)
        x = (a[:, None] * np.sin(2 * np.pi * f[:, None] * t + p[:, None])).sum(0)
    elif kind == 1:  # a linear chirp f0 -> f1
        f0, f1 = rng.uniform(100, 1500, 2)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * CLIP_SECONDS)) + rng.uniform(0, 2 * np.pi))
    else:  # a melody: equal-length notes with a 10 ms attack and an exponential decay
        k = rng.integers(4, 9)
        notes = rng.choice(PENTATONIC, k)
        length = n // k
        x = np.zeros(n)
        tn = np.arange(length) / SAMPLE_RATE
        envelope = np.minimum(1, tn / 0.01) * np.exp(-3 * tn / (length / SAMPLE_RATE))
        for j, f in enumerate(notes):  # k <= 8 notes: a loop over notes, not samples
            x[j * length:(j + 1) * length] = envelope * np.sin(2 * np.pi * f * tn)
    return (x / max(np.abs(x).max(), 1e-9) * rng.uniform(0.3, 0.9)).astype(np.float32)


def tones() -> list[np.ndarray]:
    return [_clip(i) for i in range(N_CLIPS)]


# ---- WAV files ----------------------------------------------------------------------------

def read_wav(path: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A PCM WAV file (8/16/24/32-bit, any channels) as mono float32 in [−1, 1], resampled to `rate`."""
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, source_rate, frames = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            if width not in (1, 2, 3, 4) or source_rate <= 0:
                raise DeepAtlasError(f"{path}: {8 * width}-bit samples at {source_rate} Hz; expected 8, 16, 24 or "
                                     "32-bit PCM at a positive rate")
            raw = f.readframes(min(frames, Path(path).stat().st_size // (width * channels)))  # what the file holds
    except (wave.Error, EOFError, OSError) as err:
        raise DeepAtlasError(f"{path}: not a readable PCM WAV file ({str(err) or err.__class__.__name__})") from None
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8).astype(np.float32) / 2 ** 23
    else:
        x = np.frombuffer(raw, {2: "<i2", 4: "<i4"}[width]).astype(np.float32) / 2 ** (8 * width - 1)
    x = x[: len(x) // channels * channels].reshape(-1, channels).mean(1)
    if len(x) == 0:
        raise DeepAtlasError(f"{path}: no audio frames")
    if source_rate != rate:  # linear resampling is enough for a model at 8 kHz
        x = F.interpolate(torch.from_numpy(x)[None, None], size=max(1, round(len(x) * rate / source_rate)),
                          mode="linear", align_corners=False)[0, 0].numpy()
    return x


def write_wav(path: Path, x: Tensor | np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Mono 16-bit PCM."""
    pcm = (np.clip(np.asarray(x, dtype=np.float32), -1, 1) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def read_wav_folder(folder: Path) -> list[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
    if not files:
        raise DeepAtlasError(f"{folder}: no .wav files")
    return [read_wav(p) for p in files]


def windows(clips: list[np.ndarray], length: int) -> Tensor:
    """Non-overlapping windows (N, length) cut from each clip; a clip's remainder shorter than a window is dropped."""
    parts = [torch.from_numpy(c[: len(c) // length * length].copy()).view(-1, length) for c in clips]
    return torch.cat(parts) if parts else torch.zeros(0, length)
