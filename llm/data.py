"""Text for calibration and evaluation: a real English Wikipedia excerpt, split by article, tokenised.

Source: the ``gensim==4.4.0`` wheel ships ``gensim/test/test_data/enwiki-latest-pages-articles1.xml-
p000000010p000030302-shortened.bz2`` (206 pages).  Each page is cleaned with gensim's own
``filter_wiki`` (templates, links, tables and tags removed), then bold/italic quote marks are
dropped; redirects and stubs under ``MIN_CHARS`` are skipped (about 100 articles, 3 M characters,
700 k SmolLM2 tokens remain).

Split (never overlapping, tested): article i goes to the *test* part when i % TEST_EVERY ==
TEST_EVERY - 1, to the *calibration* part otherwise; each part is its articles joined by blank
lines and tokenised once, without special tokens, into one int64 stream.

    eval_windows(tokens, n, L)        -> int64 [n, L]  n evenly spaced, non-overlapping windows
    calibration_windows(tokens, n, L) -> int64 [n, L]  n random non-overlapping windows (seeded)

A tokenised corpus can be saved (``save_corpus``, ``bcq corpus``) and read back (``read_corpus``,
``bcq demo --corpus``) as a plain ``.npz`` (no pickles; a digest of the tokens guards against
corruption), so that a machine without gensim (an offline GPU box) runs on exactly the same tokens.
"""
from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.util
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIKI_FILE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_CHARS = 500
TEST_EVERY = 5


@dataclass(frozen=True)
class Article:
    title: str
    text: str


@dataclass
class Corpus:
    """Tokenised calibration and test streams (int64 [T]) and the article titles of each part."""

    calib_tokens: np.ndarray
    test_tokens: np.ndarray
    calib_titles: tuple[str, ...]
    test_titles: tuple[str, ...]

    @functools.cached_property
    def digest(self) -> str:
        """corpus_digest of the two token streams (hashed once per Corpus)."""
        return corpus_digest(self.calib_tokens, self.test_tokens)


def packaged_file(package: str, relpath: str, argument: str, install: str) -> Path:
    """Path of a file shipped inside an installed package, found without importing the package.

    FileNotFoundError naming `argument` and the `install` command when the package or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{argument}: {package} is not installed; run `{install}`")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: {path} is missing from the {package} package; reinstall it: `{install}`")
    return path


def wiki_path() -> Path:
    """Path of the Wikipedia excerpt inside the installed gensim wheel."""
    return packaged_file("gensim", WIKI_FILE, "text", "pip install gensim==4.4.0")


def clean(wikitext: str) -> str:
    """gensim's filter_wiki, then drop ''bold''/'''italic''' marks and squeeze blank lines."""
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(wikitext)
    text = text.replace("'''", "").replace("''", "")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def load_articles(path: Path | None = None) -> list[Article]:
    """Every cleaned article of the excerpt, in file order (redirects and stubs skipped)."""
    from gensim.corpora.wikicorpus import extract_pages

    path = wiki_path() if path is None else Path(path)
    articles = []
    with bz2.open(path) as f:
        for title, wikitext, _pageid in extract_pages(f):
            if wikitext.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = clean(wikitext)
            if len(text) >= MIN_CHARS:
                articles.append(Article(title, text))
    return articles


def split_articles(articles: list[Article], test_every: int = TEST_EVERY) -> tuple[list[Article], list[Article]]:
    """(calibration, test): every test_every-th article is held out for testing."""
    if test_every < 2:
        raise ValueError(f"test_every: must be >= 2, got {test_every}")
    calib = [a for i, a in enumerate(articles) if i % test_every != test_every - 1]
    test = [a for i, a in enumerate(articles) if i % test_every == test_every - 1]
    return calib, test


def tokenize(tokenizer, articles: list[Article]) -> np.ndarray:
    """Articles joined by blank lines -> int64 [T] token ids (no BOS/EOS)."""
    text = "\n\n".join(a.text for a in articles)
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def load_corpus(tokenizer, test_every: int = TEST_EVERY) -> Corpus:
    """The calibration and test token streams of the Wikipedia excerpt (about 8 s)."""
    calib, test = split_articles(load_articles(), test_every)
    return Corpus(calib_tokens=tokenize(tokenizer, calib), test_tokens=tokenize(tokenizer, test),
                  calib_titles=tuple(a.title for a in calib), test_titles=tuple(a.title for a in test))


CORPUS_KEYS = ("calib_tokens", "test_tokens", "calib_titles", "test_titles", "digest")


def corpus_digest(calib_tokens: np.ndarray, test_tokens: np.ndarray) -> str:
    """sha256 (first 16 hex digits) of both token streams as little-endian int64."""
    h = hashlib.sha256()
    for t in (calib_tokens, test_tokens):
        h.update(np.ascontiguousarray(t, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


def save_corpus(corpus: Corpus, path) -> Path:
    """Write the tokenised corpus to `path` (.npz: tokens, titles, digest), atomically; returns the path."""
    from bcq_core.fileio import atomic_write, check_out_path

    path = check_out_path(path, ".npz")
    arrays = {"calib_tokens": np.asarray(corpus.calib_tokens, dtype=np.int64),
              "test_tokens": np.asarray(corpus.test_tokens, dtype=np.int64),
              "calib_titles": np.asarray(corpus.calib_titles, dtype=str),
              "test_titles": np.asarray(corpus.test_titles, dtype=str),
              "digest": np.asarray(corpus.digest)}

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, **arrays)

    atomic_write(path, write)
    return path


def read_corpus(path) -> Corpus:
    """The corpus save_corpus wrote; ValueError naming `path` for anything else, truncated or corrupted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus: no file '{path}'")
    try:
        with np.load(path, allow_pickle=False) as z:  # object (pickled) arrays raise ValueError here
            a = {k: z[k] for k in CORPUS_KEYS if k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise ValueError(f"corpus: '{path}' is not a readable .npz corpus file ({e})") from None
    missing = [k for k in CORPUS_KEYS if k not in a]
    if missing:
        raise ValueError(f"corpus: '{path}' is not a corpus file (missing {missing})")
    for k in ("calib_tokens", "test_tokens"):
        if a[k].dtype != np.int64 or a[k].ndim != 1 or not len(a[k]):
            raise ValueError(f"corpus: {k} must be a non-empty int64 [T] stream, got {a[k].dtype} {a[k].shape}")
    corpus = Corpus(a["calib_tokens"], a["test_tokens"], tuple(str(t) for t in a["calib_titles"]),
                    tuple(str(t) for t in a["test_titles"]))
    if str(a["digest"]) != corpus.digest:
        raise ValueError(f"corpus: '{path}' is corrupted (token digest {corpus.digest}, file says {a['digest']})")
    return corpus


def eval_windows(tokens: np.ndarray, n: int, length: int) -> np.ndarray:
    """n non-overlapping windows of `length` tokens, evenly spaced over the stream: int64 [n, length]."""
    T = len(tokens)
    if n < 1 or length < 2:
        raise ValueError(f"windows: need n >= 1 and length >= 2, got n={n}, length={length}")
    if n * length > T:
        raise ValueError(f"windows: {n} x {length} tokens do not fit in a stream of {T}")
    stride = (T - length) // max(n - 1, 1) if n > 1 else 0
    starts = np.arange(n) * stride
    return np.stack([tokens[s:s + length] for s in starts])


def calibration_windows(tokens: np.ndarray, n: int, length: int, seed: int = 0) -> np.ndarray:
    """n random non-overlapping windows of `length` tokens (seeded): int64 [n, length]."""
    slots = len(tokens) // length
    if n < 1 or n > slots:
        raise ValueError(f"windows: need 1 <= n <= {slots} windows of {length} tokens, got {n}")
    picks = np.sort(np.random.default_rng(seed).choice(slots, size=n, replace=False))
    return np.stack([tokens[s * length:(s + 1) * length] for s in picks])
