"""Tests for encoders.finetune: fine-tuning the bundled MiniLM towards target vectors (fast: ~100
short texts, one epoch, on the CPU)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from encoders import EmbeddingCache, FineTuneConfig, TextEncoder, TunedTextEncoder, finetune_text  # noqa: E402
from encoders.text import default_model_path  # noqa: E402
from kg.errors import ModelError  # noqa: E402

try:
    default_model_path()
except (ImportError, FileNotFoundError) as exc:  # pragma: no cover - env without the model package
    pytest.skip(f"bundled MiniLM model unavailable: {exc}", allow_module_level=True)

TOPICS = [["alien", "galaxy", "starship", "robot", "planet", "laser"],
          ["love", "wedding", "kiss", "date", "romance", "bride"],
          ["ghost", "zombie", "blood", "haunted", "scream", "vampire"],
          ["soldier", "battle", "army", "general", "war", "tank"],
          ["cartoon", "puppy", "toy", "magic", "princess", "fairy"]]
N, TRAIN = 100, 80  # texts; the first TRAIN learn, the rest are held out
FAST = dict(epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    return TextEncoder(device="cpu", batch_size=32, show_progress=False)


@pytest.fixture(scope="module")
def data():
    """Texts of 5 topics; the target of a text is its topic's centroid (16-d, random)."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 5
    texts = [f"A film about {' and '.join(rng.choice(TOPICS[c], 2, replace=False))}, number {i}"
             for i, c in enumerate(labels)]
    centroids = rng.normal(size=(5, 16)).astype(np.float32)
    return texts, labels, centroids


def tune(enc, data, rows=slice(0, TRAIN), **kw):
    texts, labels, centroids = data
    cfg = FineTuneConfig(**{**FAST, **kw})
    return finetune_text(enc, texts[rows], centroids[labels[rows]], config=cfg, device="cpu")


def accuracy(vecs: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> float:
    c = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    return float(((vecs @ c.T).argmax(1) == labels).mean())


@pytest.fixture(scope="module")
def tuned(enc, data) -> TunedTextEncoder:
    return tune(enc, data)


def test_fine_tuning_moves_texts_to_their_targets(enc, data, tuned):
    texts, labels, centroids = data
    untuned = tune(enc, data, epochs=0)  # the randomly initialised head, no step taken
    held = slice(TRAIN, N)
    base_acc = accuracy(untuned.encode(texts[held]), labels[held], centroids)
    acc = accuracy(tuned.encode(texts[held]), labels[held], centroids)
    assert acc >= 0.8 and acc > base_acc + 0.3, (acc, base_acc)  # chance is 0.2
    assert accuracy(tuned.encode(texts[:TRAIN]), labels[:TRAIN], centroids) >= 0.9
    vecs = tuned.encode(texts[:5])
    assert vecs.shape == (5, 16) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert tuned.meta["mode"] == "cached"  # the cached lower layers + our top forward matched the model's
    assert tuned.meta["layer_indices"] == [4, 5] and tuned.meta["adapter"] == "full"
    assert len(tuned.history) == 1 and tuned.history[0]["steps"] == TRAIN // 16
    assert tuned.seconds > 0 and np.isfinite(tuned.history[0]["loss"])


def test_save_load_round_trip_and_base_check(enc, data, tuned, tmp_path):
    texts = data[0]
    tuned.save(tmp_path / "ft")
    assert sorted(p.name for p in (tmp_path / "ft").iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert meta["base_model_id"] == enc.model_id and meta["config"]["epochs"] == 1 and meta["layer_indices"] == [4, 5]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ft" / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert "head.weight" in names and all(n.startswith(("head.", "model.encoder.layer.4.", "model.encoder.layer.5."))
                                          for n in names)
    loaded = TunedTextEncoder.load(tmp_path / "ft", enc, device="cpu")
    assert loaded.model_id == tuned.model_id and loaded.history == tuned.history
    np.testing.assert_array_equal(loaded.encode(texts), tuned.encode(texts))
    other = TextEncoder(device="cpu", max_length=32, show_progress=False)  # another base model id
    with pytest.raises(ModelError, match="base text model"):
        TunedTextEncoder.load(tmp_path / "ft", other)


def test_model_id_follows_the_weights_and_keys_the_cache(enc, data, tuned, tmp_path):
    texts = data[0]
    assert tuned.model_id.startswith(enc.model_id + "+ft-") and len(tuned.model_id) == len(enc.model_id) + 16
    assert tune(enc, data, seed=1).model_id != tuned.model_id
    cache = EmbeddingCache(tmp_path / "cache")
    first = tuned.encode_cached(texts, cache)
    assert tuned.last_encoded_count == N
    second = tuned.encode_cached(texts + ["a new film"], cache)
    assert tuned.last_encoded_count == 1
    again = tuned.encode_cached(texts, cache)
    assert tuned.last_encoded_count == 0
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, second[:N])
    np.testing.assert_allclose(first, tuned.encode(texts), atol=1e-6)
    enc.encode_cached(texts[:3], cache)  # the base model has its own key: nothing is reused across them
    assert enc.last_encoded_count == 3
    with pytest.raises(TypeError):
        tuned.encode("one string")


def test_head_only_and_lora(enc, data, tmp_path):
    pytest.importorskip("peft")
    texts = data[0]
    before = enc.encode(texts[:4])
    head = tune(enc, data, train_layers=0)
    assert head.meta["trained"] == [] and head.meta["adapter"] == "head"
    lora = tune(enc, data, adapter="lora", lora_r=4)
    assert lora.meta["adapter"] == "lora" and lora.meta["trained"]
    assert all("lora_" in n and (".layer.4." in n or ".layer.5." in n) for n in lora.meta["trained"])
    _, labels, centroids = data
    assert accuracy(lora.encode(texts), labels, centroids) >= 0.8
    lora.save(tmp_path / "lora")
    np.testing.assert_array_equal(TunedTextEncoder.load(tmp_path / "lora", enc, device="cpu").encode(texts),
                                  lora.encode(texts))
    np.testing.assert_array_equal(enc.encode(texts[:4]), before)  # the base encoder is left unchanged


def test_same_seed_same_model(enc, data):
    texts, labels, centroids = data
    pairs = np.array([[i, i + 5] for i in range(0, TRAIN - 5, 3)])
    cfg = FineTuneConfig(**FAST, train_layers=-1, max_texts=48)  # all layers, with the pair loss
    runs = [finetune_text(enc, texts[:TRAIN], centroids[labels[:TRAIN]], pairs=pairs, config=cfg, device="cpu")
            for _ in range(2)]
    assert runs[0].meta["layer_indices"] == list(range(6))
    assert runs[0].model_id == runs[1].model_id and runs[0].history[0]["loss"] == runs[1].history[0]["loss"]
    np.testing.assert_array_equal(runs[0].encode(texts), runs[1].encode(texts))
    assert runs[0].history[0]["steps"] == 3  # max_texts=48 per epoch, 16 a batch


def test_time_budget_and_input_checks(enc, data):
    texts, labels, centroids = data
    quick = tune(enc, data, epochs=3, time_budget_s=0.0)
    assert len(quick.history) == 1 and quick.history[0]["steps"] == 1
    targets = centroids[labels]
    with pytest.raises(ValueError, match="targets"):
        finetune_text(enc, texts, targets[:-1], device="cpu")
    with pytest.raises(ValueError, match="pairs"):
        finetune_text(enc, texts, targets, pairs=np.array([[0, N]]), device="cpu")
    with pytest.raises(ValueError, match="adapter"):
        FineTuneConfig(adapter="prefix")
    cfg = FineTuneConfig(**FAST)
    assert FineTuneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
