"""Tests for encoders.TextEncoder, encoders.EmbeddingCache and encoders.resolve_device."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from encoders import EmbeddingCache, TextEncoder, resolve_device  # noqa: E402
from encoders.cache import text_hash  # noqa: E402
from encoders.text import default_model_path, fp32_load_kwargs  # noqa: E402

try:
    MODEL_DIR = default_model_path()
except (ImportError, FileNotFoundError) as exc:  # pragma: no cover - env without the model package
    pytest.skip(f"bundled MiniLM model unavailable: {exc}", allow_module_level=True)

LONG = " ".join(f"token{i} alpha beta gamma" for i in range(300))  # far beyond 256 tokens
TEXTS = [
    "Toy Story (1995). Animation, Children's, Comedy. Directed by John Lasseter.",
    "",
    "Heat",
    LONG,
    "A lonely robot falls in love while cleaning up an abandoned Earth.",
    "Amélie (2001): une comédie romantique à Paris — naïve, café, 東京!",
    "1234567890 !@#$%^&*()",
    "The Godfather Part II",
    "   leading and trailing whitespace   ",
    "Documentary|War|Drama",
    "a " * 40,
    "Star Wars: Episode IV - A New Hope (1977). Action, Adventure, Fantasy, Sci-Fi.",
    "x",
    "Jurassic Park",
    "Schindler's List (1993). Drama, War. Directed by Steven Spielberg. " * 3,
    "emoji 🎬🍿 text",
    "UPPER CASE TITLE",
    "Fargo (1996)",
    "Newlines\nand\ttabs",
    "Heat",  # duplicate on purpose
]


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    # Small batch so the 20 texts span several length-sorted batches.
    return TextEncoder(device="cpu", batch_size=4, show_progress=False)


@pytest.fixture(scope="module")
def bare():
    tok = transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(MODEL_DIR), local_files_only=True, **fp32_load_kwargs()).eval()
    return tok, model


def bare_encode(tok, model, texts, batch_size=8, max_length=256) -> np.ndarray:
    """Reference: plain AutoModel loop in input order, mean pooling + L2 normalisation."""
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            b = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=1))
    return torch.cat(out).numpy()


@pytest.fixture
def forward_calls(enc):
    """Counter of top-level model forward passes (one per batch) during a test."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    handle = enc.model.register_forward_pre_hook(hook)
    yield calls
    handle.remove()


# --------------------------------------------------------------------------- device
def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda:1")


# --------------------------------------------------------------------------- encoder basics
def test_shapes_dtype_normalised(enc):
    x = enc.encode(TEXTS)
    assert x.shape == (len(TEXTS), enc.dim) == (len(TEXTS), 384)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert enc.encode([]).shape == (0, 384)
    assert enc.device == torch.device("cpu")


def test_matches_bare_automodel_loop(enc, bare):
    ours = enc.encode(TEXTS)
    ref = bare_encode(*bare, TEXTS)
    cos = (ours * ref).sum(1)
    assert cos.min() > 0.999, cos


def test_order_preserved_after_length_sort(enc):
    x = enc.encode(TEXTS)
    singles = np.stack([enc.encode([t])[0] for t in TEXTS[:6]])
    assert ((x[:6] * singles).sum(1) > 0.9999).all()
    rev = enc.encode(TEXTS[::-1])
    assert ((x[::-1] * rev).sum(1) > 0.9999).all()
    np.testing.assert_allclose(x[2], x[-1], atol=1e-5)  # "Heat" twice


def test_long_text_is_truncated(enc):
    a, b = enc.encode([LONG, LONG + " completely different ending words here"])
    assert float(a @ b) > 0.99999


def test_bad_input_types(enc):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        enc.encode(["ok", 3])
    with pytest.raises(TypeError):
        enc.encode("not a list")


def test_missing_model_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TextEncoder(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="config.json"):
        TextEncoder(tmp_path)


def test_model_id_stable_and_sensitive(enc):
    again = TextEncoder(device="cpu", batch_size=4, show_progress=False)
    assert again.model_id == enc.model_id
    assert "L256" in enc.model_id
    short = TextEncoder(device="cpu", max_length=128, show_progress=False)
    assert short.model_id != enc.model_id


# --------------------------------------------------------------------------- cache
def test_encode_cached_only_encodes_missing(enc, tmp_path, forward_calls):
    cache = EmbeddingCache(tmp_path / "cache")
    texts = TEXTS[:10] + ["Heat"]  # includes an in-call duplicate
    calls = forward_calls

    first = enc.encode_cached(texts, cache)
    assert enc.last_encoded_count == len(set(texts))
    assert cache.count(enc.model_id) == len(set(texts)) == len(cache)
    np.testing.assert_allclose(first, enc.encode(texts), atol=1e-5)

    calls[0] = 0
    second = enc.encode_cached(texts, cache)
    assert enc.last_encoded_count == 0 and calls[0] == 0
    np.testing.assert_array_equal(first, second)

    third = enc.encode_cached(texts + ["a brand new text"], cache)
    assert enc.last_encoded_count == 1 and calls[0] == 1
    np.testing.assert_array_equal(third[:-1], first)

    # Persistence: a fresh instance on the same directory sees everything.
    calls[0] = 0
    fresh = EmbeddingCache(tmp_path / "cache")
    fourth = enc.encode_cached(texts + ["a brand new text"], fresh)
    assert enc.last_encoded_count == 0 and calls[0] == 0
    np.testing.assert_array_equal(fourth, third)
    assert enc.encode_cached([], fresh).shape == (0, enc.dim)


def test_cache_put_get_compact(tmp_path):
    rng = np.random.default_rng(0)
    cache = EmbeddingCache(tmp_path)
    hs = [text_hash(f"t{i}") for i in range(50)]
    emb = rng.standard_normal((50, 8)).astype(np.float32)

    found, got = cache.get("m", hs)
    assert not found.any() and got.shape[0] == 0
    assert cache.put("m", hs[:20], emb[:20]) == 20
    assert cache.put("m", hs[10:30], emb[10:30]) == 10  # overlapping rows are skipped
    assert cache.put("m", hs[:5], emb[:5]) == 0  # nothing new -> no shard
    assert cache.put("m", hs[30:50] + hs[30:32], np.vstack([emb[30:50], emb[30:32]])) == 20
    mdir = cache.model_dir("m")
    assert len(list(mdir.glob("part-*.safetensors"))) == 3

    order = [49, 3, 17, 3, 0]
    found, got = cache.get("m", [hs[i] for i in order] + [text_hash("missing")])
    assert found.tolist() == [True] * 5 + [False]
    np.testing.assert_array_equal(got, emb[order])

    with pytest.raises(ValueError, match="dim"):
        cache.put("m", [text_hash("new")], np.zeros((1, 9), np.float32))
    with pytest.raises(ValueError):
        cache.put("m", [b"short"], np.zeros((1, 8), np.float32))

    # A separate model id lives in its own directory.
    cache.put("other/model@x", hs[:3], emb[:3, :4])
    assert cache.count("other/model@x") == 3 and cache.count("m") == 50 and len(cache) == 53

    # Leftover temp file from a crashed write is ignored.
    (mdir / ".part-0099.safetensors.123.tmp").write_bytes(b"garbage")
    assert cache.compact("m") == 50
    assert [p.name for p in mdir.glob("part-*.safetensors")] == ["part-0003.safetensors"]
    reopened = EmbeddingCache(tmp_path)
    found, got = reopened.get("m", hs)
    assert found.all()
    np.testing.assert_array_equal(got, emb)


def test_cache_skips_corrupt_shard(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("m", [text_hash("a")], np.ones((1, 4), np.float32))
    (cache.model_dir("m") / "part-0007.safetensors").write_bytes(b"\x00" * 5)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fresh = EmbeddingCache(tmp_path)
        assert fresh.count("m") == 1
    assert any("unreadable shard" in str(x.message) for x in w)


# --------------------------------------------------------------------------- other models
def test_other_local_hf_model_dir(tmp_path, enc):
    tok = transformers.AutoTokenizer.from_pretrained(str(MODEL_DIR), local_files_only=True)
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, vocab_size=tok.vocab_size
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)

    tiny = TextEncoder(tmp_path, device="cpu", batch_size=3, show_progress=False)
    assert tiny.dim == 32
    assert tiny.model_id != enc.model_id
    x = tiny.encode(TEXTS)
    assert x.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    model = transformers.AutoModel.from_pretrained(str(tmp_path), local_files_only=True).eval()
    ref = bare_encode(tok, model, TEXTS)
    assert (x * ref).sum(1).min() > 0.999


def test_offline_env_not_clobbered(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    TextEncoder(device="cpu", show_progress=False)
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_precision_auto_reduced_on_cpu_and_in_model_id(enc, bare):
    from encoders.text import max_length_of, native_cpu_bf16, precision_of

    assert enc.precision == ("bf16" if native_cpu_bf16() else "fp32")
    fp32 = TextEncoder(device="cpu", show_progress=False, precision="fp32")
    bf16 = TextEncoder(device="cpu", show_progress=False, precision="bf16")
    assert precision_of(fp32.model_id) == "fp32" and precision_of(bf16.model_id) == "bf16"
    assert max_length_of(fp32.model_id) == max_length_of(bf16.model_id) == 256 and max_length_of("x@abc") is None
    assert fp32.model_id != bf16.model_id  # the cache never mixes their vectors
    ref = bare_encode(*bare, TEXTS)
    assert (fp32.encode(TEXTS) * ref).sum(1).min() > 0.99999
    assert (bf16.encode(TEXTS) * ref).sum(1).min() > 0.999
    with pytest.raises(ValueError, match="precision"):
        TextEncoder(device="cpu", show_progress=False, precision="int8")
