"""Model hardening (issue 17): a corrupt model folder gives one clear error naming the file (sha256
per tensor file in the JSON manifest, verified on load; NaN weights, bad shapes and unparsable files
refused), and a saved model may only name a text model inside its folder or the allowed paths."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kghelpers import SAMPLES, build_sample_kg

torch = pytest.importorskip("torch")

from coldstart import ColdStartRecommender  # noqa: E402
from encoders.checkpoint import CheckpointError  # noqa: E402
from encoders.text import default_model_path  # noqa: E402
from kg import KnowledgeGraph  # noqa: E402
from kg.errors import KGError, ModelError  # noqa: E402
from pipelines.cli import main  # noqa: E402

TINY = dict(dim=16, layers=1, epochs=1, patience=1, batch_size=2048, finetune_epochs=0,
            progress=False, device="cpu")
RESOLVER = "resolver.safetensors"
ENCODER = "encoder/model.safetensors"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(store dir, model dir) of a tiny model trained on the samples."""
    root = tmp_path_factory.mktemp("hardmodel")
    kg = build_sample_kg(root / "store", triples=False)
    ColdStartRecommender(seed=0, **TINY).fit(kg).save(root / "model")
    return root / "store", root / "model"


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A private copy of the model folder, to corrupt."""
    return Path(shutil.copytree(trained[1], tmp_path / "model"))


@pytest.fixture
def kg(trained):
    return KnowledgeGraph.open(trained[0])


def _edit_json(path: Path, edit) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _load_error(folder: Path, kg, match: str) -> str:
    with pytest.raises(ModelError, match=match) as e:
        ColdStartRecommender.load(folder, kg)
    assert isinstance(e.value, (KGError, ValueError)) and "\n" not in str(e.value)
    return str(e.value)


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) * 2 // 3] ^= 0xFF
    p.write_bytes(bytes(data))


def _strip_checksums(folder: Path) -> None:
    for cfg in (folder / "config.json", folder / "encoder" / "config.json"):
        _edit_json(cfg, lambda m: m.pop("sha256"))


def test_manifests_record_a_sha256_per_tensor_file(folder, kg):
    from kg.store import sha256_file

    for cfg, name in ((folder / "config.json", RESOLVER), (folder / "encoder" / "config.json", "model.safetensors")):
        assert json.loads(cfg.read_text())["sha256"] == {name: sha256_file(cfg.parent / name)}
    assert ColdStartRecommender.load(folder, kg).score([1], ["b0001"]).shape == (1, 1)


@pytest.mark.parametrize("file", [RESOLVER, ENCODER])
@pytest.mark.parametrize("damage", [_truncate, _flip, lambda p: p.write_bytes(b"")], ids=["truncated", "flipped",
                                                                                         "empty"])
def test_damaged_tensor_file_is_named(folder, kg, file, damage):
    damage(folder / file)
    msg = _load_error(folder, kg, "checksum mismatch")
    assert str(folder / file) in msg


@pytest.mark.parametrize("file", [RESOLVER, ENCODER])
@pytest.mark.parametrize("damage", [_truncate, lambda p: p.write_bytes(b"")], ids=["truncated", "empty"])
def test_old_folders_without_checksums_still_catch_unparsable_files(folder, kg, file, damage):
    _strip_checksums(folder)
    assert ColdStartRecommender.load(folder, kg) is not None  # an intact old folder loads unverified
    damage(folder / file)
    msg = _load_error(folder, kg, "not a valid safetensors file")
    assert str(folder / file) in msg


@pytest.mark.parametrize("side", ["resolver", "encoder"])
def test_nan_weights_are_refused_naming_file_and_tensor(folder, kg, side):
    from kg.store import sha256_file

    file, cfg = (folder / RESOLVER, folder / "config.json") if side == "resolver" else \
        (folder / ENCODER, folder / "encoder" / "config.json")
    if side == "resolver":
        from safetensors.numpy import load_file, save_file

        t = load_file(str(file))
        name = next(k for k in sorted(t) if k.startswith(("W.", "z.")) and t[k].dtype == np.float32)
        t[name][..., 0] = np.nan
        save_file(t, str(file))
    else:
        from safetensors.torch import load_file, save_file

        t = load_file(str(file))
        name = next(k for k in sorted(t) if t[k].is_floating_point())
        t[name].view(-1)[0] = float("nan")
        save_file(t, str(file))
    _edit_json(cfg, lambda m: m["sha256"].update({file.name: sha256_file(file)}))  # saved that way
    msg = _load_error(folder, kg, "NaN or infinite")
    assert str(file) in msg and repr(name) in msg


@pytest.mark.parametrize("where", ["config.json", "encoder/config.json"])
@pytest.mark.parametrize("dim", [17, 10**9])
def test_edited_dim_is_a_shape_error_naming_the_files(folder, kg, where, dim):
    """A huge ``dim`` must fail the same way (shapes are checked before anything is allocated)."""
    _edit_json(folder / where, lambda m: m["config"].update(dim=dim))
    weights = folder / (RESOLVER if where == "config.json" else ENCODER)
    msg = _load_error(folder, kg, "does not fit")
    assert str(weights) in msg and str(folder / where) in msg


def test_unreadable_manifests_are_named(folder, kg):
    (folder / "encoder" / "config.json").write_text("{not json")
    assert str(folder / "encoder" / "config.json") in _load_error(folder, kg, "not a readable JSON")
    (folder / "config.json").write_text("[1, 2]")
    assert str(folder / "config.json") in _load_error(folder, kg, "not a JSON model manifest")
    with pytest.raises(CheckpointError):  # the encoder checkpoint API raises the same family
        from encoders import load_graph_encoder

        load_graph_encoder(folder / "encoder")


def test_cli_recommend_with_a_corrupt_model_one_error_line(trained, folder, tmp_path, capsys):
    shutil.copytree(trained[0], tmp_path / "store")
    users = tmp_path / "users.csv"
    users.write_text("user_id\n1\n2\n")
    _truncate(folder / ENCODER)
    rc = main(["recommend", "--model", str(folder), "--store", str(tmp_path / "store"), "--users", str(users),
               "--out", str(tmp_path / "recs.parquet"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err
    assert str(folder / ENCODER) in lines[0] and "checksum mismatch" in lines[0]
    assert not (tmp_path / "recs.parquet").exists()


# -- the text model a saved folder may name ---------------------------------------------------------
def _set_text_model(folder: Path, value) -> None:
    _edit_json(folder / "config.json", lambda m: m["config"].update(text_model=value))


def test_text_model_outside_the_folder_is_refused(folder, kg, tmp_path, monkeypatch):
    monkeypatch.delenv("KGCS_MODEL_PATHS", raising=False)
    outside = tmp_path / "elsewhere" / "some-model"
    outside.mkdir(parents=True)
    for value in (str(outside), "../elsewhere/some-model", "/etc"):
        _set_text_model(folder, value)
        msg = _load_error(folder, kg, "outside the model folder")
        assert str(folder / "config.json") in msg and "KGCS_MODEL_PATHS" in msg
    # a symlink inside the folder that leads outside is outside
    (folder / "link").symlink_to(outside)
    _set_text_model(folder, "link")
    _load_error(folder, kg, "outside the model folder")
    # allowed: listed in $KGCS_MODEL_PATHS, or named by the caller
    _set_text_model(folder, str(outside))
    monkeypatch.setenv("KGCS_MODEL_PATHS", f"/nonexistent:{tmp_path / 'elsewhere'}")
    assert ColdStartRecommender.load(folder, kg).config.text_model == str(outside.resolve())
    monkeypatch.delenv("KGCS_MODEL_PATHS")
    m = ColdStartRecommender.load(folder, kg, text_model=default_model_path())
    assert m.config.text_model == str(default_model_path())


def test_text_model_inside_the_folder_or_the_package_is_allowed(folder, kg, monkeypatch):
    monkeypatch.delenv("KGCS_MODEL_PATHS", raising=False)
    (folder / "text").mkdir()
    _set_text_model(folder, "text")
    assert ColdStartRecommender.load(folder, kg).config.text_model == str((folder / "text").resolve())
    _set_text_model(folder, str(default_model_path()))
    m = ColdStartRecommender.load(folder, kg)
    assert m.config.text_model == str(default_model_path().resolve())
    # and serving new text really uses it
    assert m._get_text_encoder("cpu").model_path == default_model_path().resolve()
    _set_text_model(folder, None)
    assert ColdStartRecommender.load(folder, kg).config.text_model is None


def test_cli_recommend_with_an_outside_text_model_one_error_line(trained, folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KGCS_MODEL_PATHS", raising=False)
    shutil.copytree(trained[0], tmp_path / "store")
    _set_text_model(folder, str(SAMPLES))
    rc = main(["recommend", "--model", str(folder), "--store", str(tmp_path / "store"),
               "--new-items", str(SAMPLES / "new_items.csv"), "--out", str(tmp_path / "r.parquet"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error:") and "outside the model folder" in err
    assert KnowledgeGraph.open(tmp_path / "store").version == KnowledgeGraph.open(trained[0]).version
