"""The Wikipedia text from gensim's wheel: cleaned, split by article with no overlap, windowed."""
import numpy as np
import pytest

from llm import data


@pytest.fixture(scope="module")
def articles():
    return data.load_articles()


def test_text_is_clean_real_english(articles):
    assert len(articles) >= 80
    text = " ".join(a.text for a in articles)
    assert len(text) > 2_000_000
    assert "{{" not in text and "[[" not in text and "'''" not in text
    assert not any(a.text.upper().startswith("#REDIRECT") for a in articles)
    assert any(a.title == "Anarchism" for a in articles)


def test_calibration_and_test_text_never_overlap(articles):
    calib, test = data.split_articles(articles)
    assert len(test) >= 15 and len(calib) >= 4 * len(test) - 4
    assert not {a.title for a in calib} & {a.title for a in test}
    calib_text = "\n".join(a.text for a in calib)
    # no paragraph of substance of a test article appears anywhere in the calibration text
    shared = [p for a in test for p in a.text.split("\n") if len(p) > 200 and p in calib_text]
    assert shared == []
    assert len(calib) + len(test) == len(articles)


def test_split_is_deterministic_and_checked(articles):
    assert data.split_articles(articles) == data.split_articles(articles)
    with pytest.raises(ValueError, match="test_every"):
        data.split_articles(articles, test_every=1)


def test_eval_windows_are_disjoint_and_cover_the_stream():
    tokens = np.arange(10_000)
    w = data.eval_windows(tokens, 8, 512)
    assert w.shape == (8, 512)
    starts = w[:, 0]
    assert (np.diff(starts) >= 512).all() and w[-1, -1] <= 9_999 and w[0, 0] == 0
    assert (w == starts[:, None] + np.arange(512)).all()
    with pytest.raises(ValueError, match="do not fit"):
        data.eval_windows(tokens, 20, 512)


def test_calibration_windows_are_disjoint_and_seeded():
    tokens = np.arange(10_000)
    a = data.calibration_windows(tokens, 16, 256, seed=0)
    assert a.shape == (16, 256) and len(set(a[:, 0].tolist())) == 16
    assert (a[:, 0] % 256 == 0).all()
    assert np.array_equal(a, data.calibration_windows(tokens, 16, 256, seed=0))
    assert not np.array_equal(a, data.calibration_windows(tokens, 16, 256, seed=1))
    with pytest.raises(ValueError):
        data.calibration_windows(tokens, 100, 256)


def _small_corpus(seed=0):
    rng = np.random.default_rng(seed)
    return data.Corpus(rng.integers(0, 49152, 300), rng.integers(0, 49152, 120), ("Alpha", "Ωmega"), ("Test",))


def test_saved_corpus_reads_back_identically(tmp_path):
    c = _small_corpus()
    path = data.save_corpus(c, tmp_path / "c.npz")
    back = data.read_corpus(path)
    assert back.calib_tokens.tobytes() == c.calib_tokens.astype(np.int64).tobytes()
    assert back.test_tokens.tobytes() == c.test_tokens.astype(np.int64).tobytes()
    assert back.calib_titles == c.calib_titles and back.test_titles == c.test_titles
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]          # no temp file left behind


def test_corrupted_truncated_or_foreign_corpus_files_are_refused(tmp_path):
    c = _small_corpus()
    good = data.save_corpus(c, tmp_path / "c.npz")
    with pytest.raises(ValueError, match="path: must end in .npz"):
        data.save_corpus(c, tmp_path / "c.bin")
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corpus: .* not a readable .npz"):
        data.read_corpus(truncated)
    tampered = tmp_path / "x.npz"                                  # one token changed, old digest kept
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_tokens"][3] += 1
    np.savez(tampered, **arrays)
    with pytest.raises(ValueError, match="corpus: .* is corrupted"):
        data.read_corpus(tampered)
    foreign = tmp_path / "f.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"corpus: .* not a corpus file \(missing"):
        data.read_corpus(foreign)
    pickled = tmp_path / "p.npz"                                   # object arrays are never unpickled
    np.savez(pickled, **{**arrays, "calib_titles": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="corpus: .* not a readable"):
        data.read_corpus(pickled)
    with pytest.raises(FileNotFoundError, match="corpus: no file"):
        data.read_corpus(tmp_path / "none.npz")
