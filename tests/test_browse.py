"""The static subcomponent site in a real browser: Debian's headless Chromium renders the site of a small harvest,
and the DOM it builds is checked (a known subcomponent's card shows its label and examples; the search box,
prefilled from the address, filters the cards) and a screenshot is taken (the committed screenshot of the tiny
run's site, figures/tiny/browser.png, comes from the same `vpd.browse.screenshot` in the components stage).

Chromium is installed with apt-get when it is missing and this runs as root; otherwise the tests are skipped
and the reason is printed in the warnings summary. Every subprocess has a deadline and runs in a process group of its own, killed whole
when the deadline passes."""
from __future__ import annotations

import html
import os
import re
import shutil
import warnings

import pytest

from procs import run
from vpd.browse import dump_dom, find_chromium, screenshot, write_site
from vpd.harvest import demo_harvest
from vpd.labels import label_subcomponents


def _install_chromium() -> str:
    "Try `apt-get install chromium` (root only); '' on success, else why it could not be done."
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "chromium is not installed and this user cannot install it (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd, limit in ((["apt-get", "update", "-qq"], 300), (["apt-get", "install", "-y", "-qq", "chromium"], 600)):
        try:
            done = run(cmd, timeout=limit, env=env)
        except AssertionError as e:   # procs.Hung: the command ran past its deadline and was killed
            return f"`{' '.join(cmd)}` did not finish in {limit} s ({e})"
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        reason = _install_chromium()
        path = find_chromium()
        if path is None:
            warnings.warn(f"the browser tests are skipped: {reason}")   # shown in the summary of `pytest -q`
            pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "`(harvest, site folder)` of the demo harvest with offline labels."
    root = tmp_path_factory.mktemp("browse")
    h = demo_harvest(root / "demo")
    label_subcomponents(h, "offline")
    write_site(h, root / "site")
    return h, root / "site"


def _cards(dom: str) -> list[tuple[str, bool]]:
    "`(key, hidden)` of every card in a dumped DOM."
    return [(m.group(1), " hidden" in m.group(2)) for m in re.finditer(r'<div class="card" data-key="([^"]+)"([^>]*)>', dom)]


def test_subcomponent_page_shows_label_examples_and_tables(chromium, site):
    h, root = site
    key = h.table().sort_values("density", ascending=False).index[0]
    matrix, c = key.rsplit(":", 1)
    dom = dump_dom(root / matrix / f"{c}.html")
    label = h.labels()[key]["label"]
    assert f'data-key="{key}"' in dom
    assert f'<span class="label stat">{html.escape(label, quote=False)}</span>' in dom
    n_top, n_random = len(h.examples(key, "top")), len(h.examples(key, "random"))
    assert dom.count('class="ex"') == n_top + n_random
    first = h.examples(key, "top")[0]
    shown = re.search(r'<div class="top">.*?<div class="ex" data-pos="(\d+)">(.*?)</div>', dom, flags=re.S)
    assert int(shown.group(1)) == first.position
    texts = re.findall(r'<span class="t[^"]*"[^>]*>([^<]*)</span>', shown.group(2))
    assert "".join(texts) == "".join(first.text)            # the whole window (the site's context covers it)
    assert re.findall(r"--ci:([0-9.]+)", shown.group(2)) == [f"{v:.2f}" for v in first.ci]
    assert "input tokens by PMI" in dom and "fires together with" in dom
    partner = h.cofiring(key)["partner"][0]
    assert f'href="../{partner.replace(":", "/")}.html"' in dom


def test_matrix_search_from_the_address_filters_cards(chromium, site):
    h, root = site
    matrix = "1.mlp.up"
    dom = dump_dom(root / f"{matrix}.html")
    cards = dict(_cards(dom))
    fired = h.table().query(f"site == '{matrix}' and count > 0").index
    assert sorted(cards) == sorted(fired) and not any(cards.values())
    word = h.input_tokens(fired[0])["text"][0].strip()
    dom = dump_dom(root / f"{matrix}.html", fragment=f"q={word}")
    cards = dict(_cards(dom))
    expected = {k for k in fired if word in " ".join([k, h.labels()[k]["label"], *h.input_tokens(k)["text"][:10],
                                                      *h.output_tokens(k)["text"][:10]]).lower()}
    assert {k for k, hidden in cards.items() if not hidden} == expected
    assert 0 < len(expected) <= len(fired)
    assert re.search(r'id="q"[^>]*', dom) and f"{len(expected)} of {len(fired)} subcomponents" in dom
    dom = dump_dom(root / f"{matrix}.html", fragment="q=no-such-token-anywhere")
    assert not [k for k, hidden in _cards(dom) if not hidden] and f"0 of {len(fired)} subcomponents" in dom


def test_screenshot(chromium, site, tmp_path):
    h, root = site
    png = screenshot(root / "1.mlp.up.html", tmp_path / "site.png", size=(1200, 900))
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000   # a page with content, not a blank image
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 900)
