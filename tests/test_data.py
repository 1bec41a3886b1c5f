"""Integration tests of the corpus and tokenizer command lines (vpd.data)."""
import json
import os
import sys

import numpy as np

import procs
from vpd.data import EOT, TokenData, load_tokenizer, read_documents

VPD = [sys.executable, "-c", "import sys; from vpd.cli import main; sys.exit(main())"]


def run(args, env=None):
    return procs.run(VPD + args, timeout=300, env=env)


def test_corpus_without_apt_falls_back_and_tokenizes(tmp_path):
    "Without apt the builder says so, uses the standard library and user text, and records it in the manifest."
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("A user-supplied note about weights.\n\nAnd a second paragraph of it.")
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = {**os.environ, "PATH": str(empty_path)}  # no apt-get, no dpkg
    r = run(["corpus", "--out", str(tmp_path / "corpus"), "--max-mb", "0.3", "--text-dir", str(mine),
             "--cache-dir", str(tmp_path / "cache")], env=env)
    assert r.returncode == 0, r.stderr
    assert "apt-get/dpkg not available" in r.stderr
    man = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert man["apt_available"] is False and "unavailable" in man["fallback"]
    assert man["sources"]["gcide"]["status"].startswith("skipped")
    assert man["sources"]["pystdlib"]["bytes"] > 100_000 and man["sources"]["user"]["docs"] == 1

    r = run(["tokenizer", "--corpus", str(tmp_path / "corpus"), "--vocab", "512", "--out", str(tmp_path / "tok")])
    assert r.returncode == 0, r.stderr
    tok = load_tokenizer(tmp_path / "tok")
    train = TokenData(tmp_path / "tok", "train")
    docs = [t for _, t in read_documents(tmp_path / "corpus", "train")]
    assert int((np.asarray(train.tokens) == tok.token_to_id(EOT)).sum()) == len(docs)
    decoded = tok.decode(np.asarray(train.tokens).tolist(), skip_special_tokens=False)
    assert decoded == "".join(d + EOT for d in docs)  # the whole shard round-trips
    man = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert man["sources"]["user"]["tokens"] > 0 and man["tokens"]["vocab_size"] == 512


def test_bad_weight_names_the_source(tmp_path):
    "A bad input is one line on stderr and exit status 2, before anything is written."
    r = run(["corpus", "--out", str(tmp_path / "c"), "--weights", "shakespeare=1", "--no-apt"])
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("vpd corpus: ") and "unknown source(s) ['shakespeare']" in r.stderr
    assert not (tmp_path / "c").exists()


def test_tokenizer_without_a_corpus(tmp_path):
    r = run(["tokenizer", "--corpus", str(tmp_path / "nothing"), "--out", str(tmp_path / "tok")])
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "holds no corpus" in r.stderr and not (tmp_path / "tok").exists()
    r = run(["tokenizer", "--corpus", str(tmp_path), "--vocab", "100", "--out", str(tmp_path / "tok")])
    assert r.returncode == 2 and "--vocab: must be at least 257, got 100" in r.stderr
