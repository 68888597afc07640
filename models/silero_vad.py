"""Silero VAD benchmark recipe.

Model: ``silero_vad/data/silero_vad.onnx`` (2.3 MB, opset 16, MIT) read verbatim out of the
``silero-vad==6.2.3`` wheel and checked against its SHA-256. Inputs ``input`` [B,576] float32 (64 context
samples then 512 new samples at 16 kHz), ``state`` [2,B,128] float32 (the LSTM state), ``sr`` int64 scalar;
outputs ``output`` [B,1] (speech probability of the 512 new samples) and ``stateN`` (the next state). The
top graph is only ``If(sr == 16000)``: the whole network (STFT as a Conv, Conv encoder, LSTM cell, Conv
decoder, Sigmoid) lives inside the If's branches, one per sample rate.

Streaming (the package's ``OnnxWrapper`` in ``silero_vad/utils_vad.py``, ``audio_forward`` /
``get_speech_timestamps``): per clip the state is reset to zeros [2,1,128] and the context to 64 zeros;
the clip is zero-padded at the end to a multiple of 512; each window of 512 new samples is fed as
``concat(context, window)`` [1,576] with the state of the previous call and ``sr = 16000``; then the state
becomes ``stateN`` and the context the last 64 samples of the 576 fed (the end of the window). A window is
speech when its probability is ``>= 0.5`` (``get_speech_timestamps``'s ``speech_prob >= threshold``).

Data (deterministic, rendered offline; no real data needed): clip ``i`` of a split is drawn from
``numpy.random.default_rng([seed, i])``. A clip starts with 0.5-1.5 s of non-speech, then alternates an
utterance and a gap of 0.3-2.0 s until it is at least 8 s long, then ends with 0.5-1.5 s of non-speech.
Each utterance is 8-16 English words spoken by ``espeak-ng`` (voice en-us, en-gb-x-rp or en-gb, with one of
13 variants: m1-m7, f1, klatt3, Alex, Andy, Michael, quincy; 120-170 words per minute, pitch 30-70),
resampled from 22,050 Hz to 16 kHz (``scipy.signal.resample_poly(x, 320, 882)``) and scaled to a peak of
-12 to -3 dBFS. Noise is added over the whole clip (speech and gaps): none (25 % of the clips), white, pink
or brown noise, at an SNR drawn from {30, 20, 10} dB relative to the clip's mean speech power. (A first
draft with six voices including en-gb-scotland and en-029, female variants f2-f4, up to 200 words per minute
and SNRs down to 5 dB gave the float model 85.6 %: Silero misses much fast or high-pitched formant-synthesised
speech; white noise at 20 dB still costs it most, see models/README.md.) The result is rounded to 16-bit PCM and written as WAV.

Labels, per 32 ms frame (window ``k`` covers samples ``[512k, 512k+512)`` of the clip): the speech of an
utterance is the interval from the first to the last sample of the clean espeak output whose 10 ms RMS
is above -40 dB of the utterance's loudest 10 ms (espeak's own leading and trailing silence excluded;
pauses between words are inside it); a frame is speech when at least half of it (256 samples) overlaps
such an interval.

Splits: ``calib`` 10 clips (116 s, 3,621 windows) and ``eval`` 60 clips (671 s, 20,955 frames, 56.6 %
labelled speech), with seeds 7001 and 7002. The clips are written into ``<cache>/silero_vad_clips/<split>/`` on
first use (about 10 s) and rewritten when the generator or the espeak-ng version changes (see
``manifest.json``). espeak-ng is a system tool (``apt-get install espeak-ng``; the figures in
models/README.md are for espeak-ng 1.51); without it the recipe raises FileNotFoundError saying so.

Calibration feeds: every window of the calibration clips, fed to the float model in streaming order, each
with the state the float model carried to it (so the ``state`` input is the real distribution).

Metrics (``evaluate``): the evaluated model streams its own state. ``accuracy``: % of frames whose
decision (probability >= 0.5) equals the label; ``agreement``: % of frames whose decision equals the float
model's; ``speech_pct``: % of frames labelled speech.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from models import common, wheels

KEY = "silero_vad"
WHEEL = wheels.Wheel("silero-vad==6.2.3", "silero_vad-6.2.3-*.whl", "ONNXQ_SILERO_VAD_WHEEL")
MEMBER = "silero_vad/data/silero_vad.onnx"
SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
SR = 16000
WINDOW = 512  # new samples per call at 16 kHz
CONTEXT = 64  # samples of the previous window prepended
STATE_SHAPE = (2, 1, 128)
THRESHOLD = 0.5

SPLITS = {"calib": (10, 7001), "eval": (60, 7002)}  # split -> (clips, seed)
GENERATOR_VERSION = 2  # bump when the clip generation changes: the cached clips are then rewritten
ESPEAK_RATE = 22050
MIN_CLIP_S = 8.0
VOICES = ("en-us", "en-gb-x-rp", "en-gb")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "klatt3", "Alex", "Andy", "Michael", "quincy")
NOISES = ("none", "white", "pink", "brown")
SNRS_DB = (30.0, 20.0, 10.0)
ACTIVE_DB = -40.0  # speech = 10 ms RMS above this, relative to the utterance's loudest 10 ms

_WORD_TEXT = """
the of and to in is was for that with as on by at from his her they which this are be have had not
but what all were when there can an your more one about other time will would into year people could
them first some then only new also over after two work just like most where may back should because
water these under great state world still between never high every city house place country school
light small large number night point family money story month order power market church office morning
river garden window letter paper table street station doctor price ticket coffee bread orange yellow
winter summer autumn spring monday friday sunday january march april august october december north
south east west london paris quick brown jumps lazy bright simple modern public private open closed
hotel bank museum library airport harbour bridge tower castle village island mountain forest valley
"""
WORDS = tuple(_WORD_TEXT.split())


# ------------------------------------------------------------------------------------------------ model
def build(cache: Path | None = None) -> Path:
    """Extract the float model from the silero-vad wheel into the cache (skipped when present and intact)."""
    return wheels.extract_model(WHEEL, MEMBER, SHA256, KEY, cache)


# ------------------------------------------------------------------------------------------- streaming
def windows(audio: np.ndarray) -> Iterator[np.ndarray]:
    """The [1,576] inputs of one clip as OnnxWrapper feeds them: zero-padded to a multiple of 512, each
    window of 512 new samples after the last 64 samples fed before (zeros for the first window)."""
    audio = np.asarray(audio, dtype=np.float32).ravel()
    pad = (-audio.size) % WINDOW
    if pad:
        audio = np.concatenate([audio, np.zeros(pad, dtype=np.float32)])
    context = np.zeros(CONTEXT, dtype=np.float32)
    for start in range(0, audio.size, WINDOW):
        x = np.concatenate([context, audio[start : start + WINDOW]])
        context = x[-CONTEXT:]
        yield x[None, :]


def stream(sess, audio: np.ndarray, record: list | None = None) -> np.ndarray:
    """Speech probability of every window of one clip, the state carried across windows from zeros (reset
    per clip) as OnnxWrapper does. When ``record`` is a list, each window's feed is appended to it."""
    state = np.zeros(STATE_SHAPE, dtype=np.float32)
    sr = np.array(SR, dtype=np.int64)
    probs = []
    for x in windows(audio):
        feed = {"input": x, "state": state, "sr": sr}
        if record is not None:
            record.append(feed)
        out, state = sess.run(None, feed)
        probs.append(float(np.asarray(out).ravel()[0]))
    return np.array(probs, dtype=np.float64)


def frame_labels(n_samples: int, intervals: Sequence[tuple[int, int]]) -> np.ndarray:
    """Speech label (bool) of each 512-sample frame of a clip of ``n_samples`` samples (padded up to a
    multiple of 512 as the stream is): true when the frame overlaps the union of ``intervals`` ([start,
    end) in samples) by at least half a frame."""
    n_frames = -(-n_samples // WINDOW)
    mask = np.zeros(n_frames * WINDOW, dtype=bool)
    for start, end in intervals:
        mask[max(0, int(start)) : max(0, int(end))] = True
    return mask.reshape(n_frames, WINDOW).sum(axis=1) >= WINDOW // 2


def active_interval(speech: np.ndarray, rate: int, floor_db: float = ACTIVE_DB) -> tuple[int, int]:
    """[start, end) in samples of ``speech`` from the first to the last 10 ms block whose RMS is above
    ``floor_db`` relative to the loudest block; (0, 0) for silence."""
    x = np.asarray(speech, dtype=np.float64).ravel()
    hop = max(1, rate // 100)
    n = -(-x.size // hop)
    blocks = np.zeros(n * hop)
    blocks[: x.size] = x
    rms = np.sqrt(np.mean(blocks.reshape(n, hop) ** 2, axis=1))
    if rms.size == 0 or rms.max() <= 0:
        return 0, 0
    active = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    return int(active[0] * hop), int(min(x.size, (active[-1] + 1) * hop))


def decisions(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs) >= THRESHOLD


# ------------------------------------------------------------------------------------------------ data
def espeak_binary() -> str:
    """Path of espeak-ng; FileNotFoundError with the one-line fix when it is not installed."""
    found = os.environ.get("ONNXQ_ESPEAK") or shutil.which("espeak-ng")
    if not found:
        raise FileNotFoundError(
            "espeak-ng not found: apt-get install espeak-ng (silero_vad synthesises its speech)"
        )
    return found


@lru_cache(maxsize=1)
def espeak_version() -> str:
    done = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=True)
    return " ".join(done.stdout.split()[:5])


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's float waveform (in [-1, 1)) of ``text`` at 22,050 Hz."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.wav"
        subprocess.run(
            [espeak_binary(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
            check=True,
            capture_output=True,
        )
        rate, pcm = read_wav(path)
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz audio, expected {ESPEAK_RATE}")
    return pcm


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """(rate, mono float32 samples in [-1, 1)) of a 16-bit PCM WAV file."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected mono 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), data.astype(np.float32) / 32768.0


def wav_bytes(samples: np.ndarray, rate: int = SR) -> bytes:
    pcm = np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def colored_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise of ``n`` samples: white, pink (1/f power) or brown (1/f^2)."""
    white = rng.standard_normal(n)
    if kind == "white":
        noise = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        spec /= f ** (0.5 if kind == "pink" else 1.0)
        noise = np.fft.irfft(spec, n)
    return noise / max(np.sqrt(np.mean(noise**2)), 1e-12)


def random_sentence(rng: np.random.Generator) -> str:
    return " ".join(str(WORDS[rng.integers(len(WORDS))]) for _ in range(int(rng.integers(8, 17))))


def make_clip(split: str, index: int) -> tuple[np.ndarray, list[tuple[int, int]], dict]:
    """(16 kHz float clip, speech intervals in samples, description) of clip ``index`` of ``split``: a
    function of the seed, the index and espeak-ng's output only."""
    from scipy.signal import resample_poly

    rng = np.random.default_rng([SPLITS[split][1], index])
    parts: list[np.ndarray] = [np.zeros(int(rng.uniform(0.5, 1.5) * SR))]
    intervals: list[tuple[int, int]] = []
    texts = []
    pos = parts[0].size
    while pos < MIN_CLIP_S * SR:
        if intervals:
            gap = np.zeros(int(rng.uniform(0.3, 2.0) * SR))
            parts.append(gap)
            pos += gap.size
        text = random_sentence(rng)
        voice = f"{VOICES[rng.integers(len(VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
        speed, pitch = int(rng.integers(120, 171)), int(rng.integers(30, 71))
        raw = synthesize(text, voice, speed, pitch).astype(np.float64)
        speech = resample_poly(raw, 320, 882)  # 22050 -> 16000
        speech *= 10 ** (rng.uniform(-12.0, -3.0) / 20) / max(np.abs(speech).max(), 1e-9)
        start, end = active_interval(speech, SR)
        intervals.append((pos + start, pos + end))
        texts.append({"text": text, "voice": voice, "speed": speed, "pitch": pitch})
        parts.append(speech)
        pos += speech.size
    parts.append(np.zeros(int(rng.uniform(0.5, 1.5) * SR)))
    clip = np.concatenate(parts)
    mask = np.zeros(clip.size, dtype=bool)
    for s, e in intervals:
        mask[s:e] = True
    noise_kind = NOISES[int(rng.integers(len(NOISES)))]
    snr = None
    if noise_kind != "none":
        snr = float(SNRS_DB[int(rng.integers(len(SNRS_DB)))])
        speech_power = float(np.mean(clip[mask] ** 2))
        clip = clip + colored_noise(noise_kind, clip.size, rng) * np.sqrt(speech_power / 10 ** (snr / 10))
    peak = np.abs(clip).max()
    if peak > 0.99:
        clip *= 0.99 / peak
    info = {"noise": noise_kind, "snr_db": snr, "utterances": texts}
    return clip, intervals, info


def clips_dir(split: str, cache: Path | None = None) -> Path:
    """``<cache>/silero_vad_clips/<split>``, (re)written when absent or stale: NNNNN.wav, labels.json
    ({file: {"intervals": [[start, end], ...], "samples": n, ...}}) and manifest.json."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: calib or eval")
    count, seed = SPLITS[split]
    folder = common.cache_dir(cache) / f"{KEY}_clips" / split
    mpath = folder / "manifest.json"
    if mpath.is_file() and (folder / "labels.json").is_file():
        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = None
        have_espeak = bool(os.environ.get("ONNXQ_ESPEAK") or shutil.which("espeak-ng"))
        if (
            old is not None
            and {k: old.get(k) for k in ("generator", "seed", "count")}
            == {"generator": GENERATOR_VERSION, "seed": seed, "count": count}
            and (not have_espeak or old.get("espeak") == espeak_version())
        ):
            return folder  # without espeak-ng, cached clips are used as they are
    manifest = {"generator": GENERATOR_VERSION, "seed": seed, "count": count, "espeak": espeak_version()}
    folder.mkdir(parents=True, exist_ok=True)
    mpath.unlink(missing_ok=True)
    labels = {}
    for i in range(count):
        clip, intervals, info = make_clip(split, i)
        name = f"{i:05d}.wav"
        common.atomic_write_bytes(folder / name, wav_bytes(clip))
        labels[name] = {"intervals": [list(iv) for iv in intervals], "samples": int(clip.size), **info}
    common.atomic_write_bytes(folder / "labels.json", json.dumps(labels, indent=0).encode())
    common.atomic_write_bytes(mpath, json.dumps(manifest).encode())  # last: marks the folder complete
    return folder


def clips(split: str, limit: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(audio as read back from the WAV, frame labels) of each clip of ``split``, in file-name order."""
    folder = clips_dir(split)
    labels = json.loads((folder / "labels.json").read_text())
    out = []
    for name in sorted(labels)[: limit if limit is not None else None]:
        _, audio = read_wav(folder / name)
        out.append((audio, frame_labels(audio.size, [tuple(iv) for iv in labels[name]["intervals"]])))
    return out


# ------------------------------------------------------------------------------------------------ feeds
def _recorded_feeds(split: str, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
    sess = common.session(build())
    count = 0
    for audio, _ in clips(split):
        record: list = []
        stream(sess, audio, record)
        for feed in record:
            if limit is not None and count >= limit:
                return
            count += 1
            yield feed


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Every window of the 10 calibration clips (3,621 feeds), ``{"input": [1,576], "state": [2,1,128],
    "sr": int64 scalar}``, with the state the float model carries to it. ``data_root`` is unused."""
    return _recorded_feeds("calib", limit)


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The evaluation windows in streaming order with the float model's states (for per-layer comparisons;
    :func:`evaluate` streams each model's own state instead)."""
    return _recorded_feeds("eval", limit)


# ------------------------------------------------------------------------------------------ evaluation
def probabilities(model_path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Per clip of the evaluation split, the probability of each frame, streamed with the model's own state."""
    sess = common.session(model_path)
    return [stream(sess, audio) for audio, _ in clips("eval", limit)]


@lru_cache(maxsize=2)
def _reference(path: str, stamp: tuple, limit: int | None) -> tuple[np.ndarray, ...]:
    return tuple(probabilities(path, limit))


def reference_probabilities(float_model: str | Path, limit: int | None = None) -> tuple[np.ndarray, ...]:
    """The float model's probabilities, computed once per process (keyed by file, evaluation mode, clips)."""
    stamp = common.run_stamp(float_model, extra=((clips_dir("eval") / "manifest.json").read_text(),))
    return _reference(str(Path(float_model).resolve()), stamp, limit)


def scores(
    probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], reference: Sequence[np.ndarray] | None = None
) -> dict[str, float]:
    """Frame accuracy (%) against ``labels``, agreement (%) with ``reference``'s decisions when given."""
    dec = np.concatenate([decisions(p) for p in probs])
    lab = np.concatenate([np.asarray(x, dtype=bool) for x in labels])
    if dec.shape != lab.shape:
        raise ValueError(f"{dec.size} frame decisions for {lab.size} labels")
    out = {
        "accuracy": 100.0 * float(np.mean(dec == lab)),
        "speech_pct": 100.0 * float(np.mean(lab)),
        "samples": float(lab.size),
    }
    if reference is not None:
        out["agreement"] = 100.0 * float(np.mean(dec == np.concatenate([decisions(p) for p in reference])))
    return out


def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """Frame accuracy (%) on the evaluation clips (``limit``: the first clips only); agreement (%) of the
    frame decisions with ``float_model`` when given. ``data_root`` is unused (the clips are synthesised)."""
    labels = [lab for _, lab in clips("eval", limit)]
    probs = probabilities(model_path, limit)
    reference = None
    if float_model is not None:
        same = Path(model_path).resolve() == Path(float_model).resolve()
        reference = probs if same else reference_probabilities(float_model, limit)
    return scores(probs, labels, reference)
