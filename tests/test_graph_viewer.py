"""The attribution-graph viewer (vpd.graphview) in a real browser: Debian's headless Chromium opens the page that
`write_viewer` writes for a small hand-built graph, and the DOM its script builds is checked against the graph
(every node and edge drawn, rows in layer order and columns in token order, a node's label and card, the strongest
edges of a pinned node in order, the threshold from the address hiding exactly the weak edges and the nodes left
without edges, a graph of more than `MAX_EDGES` edges opening on exactly its `MAX_EDGES` strongest). The screenshot `figures/tiny/graph_viewer.png` is taken of the same page.

Without Chromium the tests are skipped and the reason is printed in the warnings summary (tests/test_browse.py
installs it when it can). Chromium runs through `vpd.browse.headless_chromium`: a deadline, and a process group of
its own that is killed whole."""
from __future__ import annotations

import html
import random
import re
import warnings
from pathlib import Path

import pytest

from vpd.browse import dump_dom, find_chromium, screenshot
from vpd.graphview import (MAX_EDGES, embedding_node, logit_node, make_graph, n_layers, site_coordinates,
                           subcomponent_node, write_viewer)

FIGURE = Path(__file__).resolve().parent.parent / "figures" / "tiny" / "graph_viewer.png"


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        reason = "chromium is not installed (apt-get install -y chromium); the graph-viewer browser tests are skipped"
        warnings.warn(reason)   # shown in the summary of `pytest -q`
        pytest.skip(reason)
    return path


def graph() -> dict:
    "Four tokens, subcomponents in three blocks, one logit; weights of both signs, one of them much weaker."
    toks = ["The", " cat", " sat", " on"]
    c = site_coordinates({"0.attn.v": 4, "0.mlp.up": 8, "1.attn.o": 4, "1.mlp.up": 8, "2.mlp.down": 8})
    card = {"label": "cat-like animals", "density": 0.0123, "mean_ci": 0.0091,
            "input_tokens": [[" cat", 4.2], [" dog", 3.7], [" kitten", 3.1]],
            "output_tokens": [[" sat", 2.3], [" purred", 2.1]],
            "examples": [{"tokens": ["The", " cat", " sat", " on"], "center": 1, "ci": [0.0, 1.0, 0.2, 0.0]},
                         {"tokens": [" a", " kitten", " slept"], "center": 1, "ci": [0.0, 0.9, 0.0]}]}
    nodes = [embedding_node(p, 100 + p, t) for p, t in enumerate(toks)] + [
        subcomponent_node("0.mlp.up", 3, 1, c, ci=1.0, activation=2.5, card=card),            # 0_7_1
        subcomponent_node("0.attn.v", 1, 1, c, ci=0.6, activation=-0.7),                      # 0_1_1
        subcomponent_node("0.mlp.up", 5, 2, c, ci=0.9, activation=1.2),                       # 0_9_2
        subcomponent_node("1.attn.o", 2, 3, c, ci=0.8, activation=1.1),                       # 1_2_3
        subcomponent_node("1.mlp.up", 0, 3, c, ci=1.0, activation=0.4,
                          card={"label": "motion verb → preposition"}),                       # 1_4_3
        subcomponent_node("2.mlp.down", 6, 3, c, ci=0.7, activation=-0.9),                    # 2_6_3
        subcomponent_node("2.mlp.down", 1, 0, c, ci=0.2, activation=0.1),                     # 2_1_0: weak only
        logit_node(3, 777, " the", 0.52, n_layers(c), target=True),                           # 4_777_3
        logit_node(3, 778, " a", 0.21, n_layers(c))]                                          # 4_778_3
    links = [("E_101_1", "0_7_1", 1.2), ("E_101_1", "0_1_1", 0.5), ("E_102_2", "0_9_2", 0.9),
             ("0_7_1", "1_2_3", 0.9), ("0_1_1", "1_2_3", -0.4), ("0_9_2", "1_4_3", 0.8), ("E_103_3", "1_4_3", 0.65),
             ("1_2_3", "2_6_3", -0.7), ("1_4_3", "2_6_3", 1.0), ("2_6_3", "4_777_3", 2.0), ("1_4_3", "4_777_3", 1.4),
             ("2_6_3", "4_778_3", -1.1), ("E_100_0", "2_1_0", 0.05), ("2_1_0", "4_778_3", -0.08),
             ("0_7_1", "4_777_3", -0.3)]
    return make_graph("The cat sat on", toks, nodes, [{"source": s, "target": t, "weight": w} for s, t, w in links],
                      slug="test-the-cat-sat-on", scan="hand-made")


def _attrs(tag: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag)}


def drawn(dom: str) -> tuple[dict[str, dict], list[dict]]:
    "`({node id: attributes}, [edge attributes])` of the nodes and edges in a dumped DOM."
    nodes = {a["data-id"]: a for a in map(_attrs, re.findall(r'<g class="node [^"]*"[^>]*>', dom))}
    edges = [_attrs(t) for t in re.findall(r'<path [^>]*class="edge[^>]*>', dom)]
    return nodes, edges


def hidden(attrs: dict) -> bool:
    return "off" in attrs["class"].split()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    g = graph()
    return g, write_viewer(g, tmp_path_factory.mktemp("graphview") / "graph.html")


def test_every_node_and_edge_is_drawn_in_its_row_and_column(chromium, page):
    g, path = page
    nodes, edges = drawn(dump_dom(path))
    assert sorted(nodes) == sorted(n["node_id"] for n in g["nodes"]) and not any(map(hidden, nodes.values()))
    assert sorted((e["data-source"], e["data-target"], float(e["data-weight"])) for e in edges) == \
        sorted((l["source"], l["target"], l["weight"]) for l in g["links"])
    assert not any(map(hidden, edges))
    assert all(("pos" in e["class"]) == (float(e["data-weight"]) >= 0) for e in edges)
    xy = {k: tuple(map(float, re.match(r"translate\(([-\d.]+),([-\d.]+)\)", a["transform"]).groups()))
          for k, a in nodes.items()}
    by = {n["node_id"]: n for n in g["nodes"]}
    row = lambda k: xy[k][1]
    # rows: tokens at the bottom (largest y), then the sites in model order, logits at the top
    assert row("E_100_0") > row("0_1_1") > row("0_7_1") > row("1_2_3") > row("1_4_3") > row("2_6_3") > row("4_777_3")
    assert row("0_7_1") == row("0_9_2") and row("2_6_3") == row("2_1_0") and row("E_100_0") == row("E_103_3")
    # columns follow the positions; nodes sharing a cell sit side by side, the likelier logit first
    for a, b in [("E_100_0", "E_101_1"), ("E_101_1", "E_102_2"), ("E_102_2", "E_103_3"), ("2_1_0", "2_6_3")]:
        assert xy[a][0] < xy[b][0]
    assert xy["4_777_3"][0] < xy["4_778_3"][0] and by["4_777_3"]["token_prob"] > by["4_778_3"]["token_prob"]


def test_labels_card_and_pinned_edges(chromium, page):
    g, path = page
    dom = dump_dom(path, fragment="pin=0_7_1")
    assert "<title>cat-like animals @1</title>" in dom and "<title>motion verb → preposition @3</title>" in dom
    card = re.search(r'<div id="card">(.*?)</div><div id="pinned">', dom, flags=re.S).group(1)
    assert '<div class="title">cat-like animals</div>' in card
    assert "<th>subcomponent</th><td>0.mlp.up:3</td>" in card and "<th>CI</th><td>1.00</td>" in card
    assert "<th>density</th><td>0.0123</td>" in card
    assert [c for c in re.findall(r'<span class="chip"[^>]*>([^<]*)</span>', card)] == \
        [" cat", " dog", " kitten", " sat", " purred"]
    assert re.search(r'<span class="c"[^>]*> cat</span>', card) and re.search(r'<span class="c"[^>]*> kitten</span>', card)
    pinned = re.search(r'<div id="pinned">(.*?)</aside>', dom, flags=re.S).group(1)
    inputs, outputs = re.findall(r'<ol class="edges [a-z]+">(.*?)</ol>', pinned, flags=re.S)
    assert re.findall(r'data-id="([^"]+)"', inputs) == ["E_101_1"]
    assert re.findall(r'data-id="([^"]+)"', outputs) == ["1_2_3", "4_777_3"]          # by |weight|: 0.9, then -0.3
    assert re.findall(r'<span class="w (pos|neg)">([^<]+)</span>', outputs) == [("pos", "+0.900"), ("neg", "-0.300")]
    nodes, _ = drawn(dom)
    assert "pinned" in nodes["0_7_1"]["class"] and sum("pinned" in a["class"] for a in nodes.values()) == 1


def test_threshold_from_the_address_hides_weak_edges_and_their_nodes(chromium, page):
    g, path = page
    cut = 0.3 * max(abs(l["weight"]) for l in g["links"])                      # 0.6
    kept = [l for l in g["links"] if abs(l["weight"]) >= cut]
    touched = {l[end] for l in kept for end in ("source", "target")}
    dom = dump_dom(path, fragment="t=0.3")
    nodes, edges = drawn(dom)
    assert sorted((e["data-source"], e["data-target"]) for e in edges if not hidden(e)) == \
        sorted((l["source"], l["target"]) for l in kept)
    assert len(kept) == 10 and len(edges) == len(g["links"])
    assert {k for k, a in nodes.items() if not hidden(a)} == touched
    assert {k for k, a in nodes.items() if hidden(a)} == {"E_100_0", "2_1_0", "0_1_1"}
    assert f"{len(kept)} of {len(g['links'])} edges, {len(touched)} of {len(g['nodes'])} nodes shown" in dom
    assert 'id="thr"' in dom and "|weight| ≥ 0.600 (30% of the largest)" in dom
    # a pinned node stays even when all its edges are hidden
    nodes, _ = drawn(dump_dom(path, fragment="t=0.3&pin=2_1_0"))
    assert not hidden(nodes["2_1_0"]) and hidden(nodes["E_100_0"])


def dense_graph(n_links: int = 1000) -> dict:
    "Five tokens, 10 subcomponents in each of three blocks at every position, `n_links` random links between blocks."
    toks = ["A", " b", " c", " d", " e"]
    c = site_coordinates({"0.mlp.up": 10, "1.mlp.up": 10, "2.mlp.up": 10})
    nodes = [subcomponent_node(f"{b}.mlp.up", i, p, c, ci=0.5) for b in range(3) for i in range(10) for p in range(5)]
    ids = [[n["node_id"] for n in nodes if n["layer"] == str(b)] for b in range(3)]
    rng = random.Random(0)
    pairs = rng.sample([(s, t) for b in range(2) for s in ids[b] for t in ids[b + 1]], n_links)
    weights = rng.sample(range(1, 100_000), n_links)                    # distinct magnitudes, so no ties at the cap
    links = [{"source": s, "target": t, "weight": w / 1000 * rng.choice([-1, 1])} for (s, t), w in zip(pairs, weights)]
    return make_graph("A b c d e", toks, nodes, links, slug="test-dense", scan="generated")


def test_a_dense_graph_opens_on_its_strongest_edges(chromium, tmp_path):
    g = dense_graph()
    assert len(g["links"]) > MAX_EDGES
    path = write_viewer(g, tmp_path / "dense.html")
    strongest = sorted(g["links"], key=lambda l: -abs(l["weight"]))[:MAX_EDGES]
    dom = dump_dom(path)
    nodes, edges = drawn(dom)
    assert len(edges) == len(g["links"])                                # all drawn, the weak ones hidden
    assert sorted((e["data-source"], e["data-target"]) for e in edges if not hidden(e)) == \
        sorted((l["source"], l["target"]) for l in strongest)
    touched = {l[end] for l in strongest for end in ("source", "target")}
    assert {k for k, a in nodes.items() if not hidden(a)} == touched
    hid = len(g["links"]) - MAX_EDGES
    assert f"{MAX_EDGES} of {len(g['links'])} edges, {len(touched)} of {len(g['nodes'])} nodes shown; " \
           f"{hid} weaker edges hidden" in dom
    assert f"|weight| ≥ {abs(strongest[-1]['weight']):.3g} " in dom
    # the address's threshold replaces the opening one: t=0 shows everything
    dom = dump_dom(path, fragment="t=0")
    nodes, edges = drawn(dom)
    assert len(edges) == len(g["links"]) and not any(map(hidden, edges)) and not any(map(hidden, nodes.values()))
    assert f"{len(g['links'])} of {len(g['links'])} edges" in dom and "hidden" not in dom.split('id="count"')[1][:200]
    # a smaller cap, with ties at its boundary: the tie is hidden whole
    tied = dense_graph()
    top = sorted(tied["links"], key=lambda l: -abs(l["weight"]))
    top[10]["weight"] = top[9]["weight"]                                # places 10 and 11 tie
    nodes, edges = drawn(dump_dom(write_viewer(tied, tmp_path / "tied.html", max_edges=10)))
    assert sorted((e["data-source"], e["data-target"]) for e in edges if not hidden(e)) == \
        sorted((l["source"], l["target"]) for l in top[:9])


def test_screenshot(chromium, page):
    g, path = page
    png = screenshot(path, FIGURE, size=(1280, 640), fragment="pin=0_7_1")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000   # a page with content, not a blank image
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1280, 640)
