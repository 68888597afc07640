"""The self-contained HTML report: structure, escaping, chart geometry, and rendering in headless Chromium."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from helpers import random_feeds, residual_net

from onnxq import api
from onnxq.analysis.fallback import choose_float_layers
from onnxq.analysis.sensitivity import SensitivityOptions, sensitivity
from onnxq.config import ActivationSpec, FallbackRule, QuantConfig
from onnxq.report.html import HIST_BARS, render_html

VOID = {"meta", "br", "img", "input", "link", "hr", "path", "line", "rect"}


class _Checker(HTMLParser):
    """Collects tags and checks that non-void elements close in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def page():
    model = residual_net(batch=1)
    feeds = random_feeds((1, 3, 8, 8), 8, seed=5)
    config = QuantConfig(activations=ActivationSpec(method="percentile", percentile=99.0))
    result = api.quantize(model, feeds, config)
    pre, _ = api.prepare(model)
    sens, ev = sensitivity(pre, result.plan, result.params, feeds[:4], SensitivityOptions(workers=1))
    fb = choose_float_layers(ev, sens, FallbackRule(max_float_layers=1))
    report = dataclasses.replace(result.report, model="<model & co>.onnx")
    html = render_html(report, result.plan, stats=result.stats, params=result.params, sensitivity=sens, fallback=fb)
    return html, result, sens


def test_page_is_well_formed_self_contained_and_escaped(page):
    html, _, _ = page
    checker = _Checker()
    checker.feed(html)
    assert not checker.errors and checker.stack == []
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html and "<link" not in html
    assert set(re.findall(r"https?://[^\"' ]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "&lt;model &amp; co&gt;.onnx" in html and "<model & co>" not in html
    for section in ("Summary", "Automatic fallback", "Sensitivity", "Plan", "Activation histograms"):
        assert f"<h2>{section}</h2>" in html
    assert "float model metric" not in html  # no metric was given: no empty row


def test_sensitivity_bars_follow_the_ranking(page):
    html, _, sens = page
    titles = re.findall(r"<title>leave-one-out gain \(dB\): ([-\d.e+]+)</title>", html)
    assert [float(t) for t in titles] == pytest.approx([layer.gain for layer in sens.layers], rel=1e-3)
    only = re.findall(r"<title>SQNR with only this layer quantized \(dB\): ([-\d.e+]+)</title>", html)
    assert [float(t) for t in only] == pytest.approx([layer.only.sqnr_db for layer in sens.layers], rel=1e-3)


def test_histogram_marks_the_chosen_threshold(page):
    html, result, _ = page
    cards = re.findall(r'<div class=t title="([^"]+)">.*?</svg>', html, re.S)
    assert set(cards) == {s.tensor for s in result.plan.activations()}
    clipped = 0
    for spec in result.plan.activations():
        s, p = result.stats[spec.tensor], result.params[spec.key]
        threshold = max(abs(p.lo), abs(p.hi))
        card = re.search(rf'title="{re.escape(spec.tensor)}">(.*?)</svg>', html, re.S).group(1)
        x = float(re.search(r'<line x1="([\d.]+)"[^>]*stroke="#c4322b"', card).group(1))
        assert x == pytest.approx(threshold / (max(s.absmax, threshold) * 1.05) * 290, abs=0.06)
        assert threshold <= s.absmax
        clipped += threshold < s.absmax  # percentile 99 clips: the red line left of the grey maximum
        assert card.count("<path") == 1 and 'width="290"' in card
    assert clipped >= 2 and HIST_BARS >= 32


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_renders_in_headless_chromium(page, tmp_path):
    html, _, _ = page
    file = tmp_path / "report.html"
    file.write_text(html, encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
                    file.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    bar_blue = np.all(np.abs(pixels - (0x35, 0x66, 0xC8)) < 8, axis=1)
    assert bar_blue.sum() > 200  # the sensitivity bars were drawn
    assert np.unique(pixels @ np.array([65536, 256, 1])).size > 50  # text and charts, not a blank page
