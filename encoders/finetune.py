"""Fine-tune a :class:`~encoders.text.TextEncoder` on the graph's collaborative signal.

``finetune_text`` teaches the text encoder to place each text next to a target vector (e.g. the
trained collaborative embedding of the item) with in-batch InfoNCE, optionally plus an InfoNCE
between texts that belong together (co-interacted items, KG triples). Only the top
``train_layers`` transformer layers (full weights or LoRA) and a linear head learn; the frozen
lower layers run once over all texts and their output is cached, so an epoch on the CPU costs
only the top layers. The result, a :class:`TunedTextEncoder`, encodes into the target space and
saves as safetensors + JSON (only the weights that changed) through :mod:`encoders.checkpoint`.
"""
from __future__ import annotations

import copy
import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .text import TextEncoder, _check_texts

if TYPE_CHECKING:
    import torch

__all__ = ["FineTuneConfig", "TunedTextEncoder", "finetune_text"]

FORMAT = "kgcs-tuned-text-encoder"
VERSION = 1
_ADAPTERS = ("auto", "full", "lora")
_LAYER_PATHS = ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer", "h", "blocks")
_LORA_AUTO_PARAMS = 100_000_000  # adapter="auto": LoRA from this many parameters on
_CHECK_ATOL = 1e-3  # cached lower layers + our top forward must match the model's own forward


@dataclass
class FineTuneConfig:
    """Settings of :func:`finetune_text` (JSON-serialisable: :meth:`to_dict` / :meth:`from_dict`)."""

    epochs: int = 2
    lr: float = 1e-4  # for the trainable transformer layers; the head uses 10x
    batch_size: int = 64
    max_length: int = 64  # tokens used while fine-tuning and for the tuned encoding
    temperature: float = 0.05
    train_layers: int = 2  # top layers that learn (lower ones run once, cached); 0 = head only; -1 = all
    adapter: str = "auto"  # "full" | "lora" | "auto" (full below 100M parameters, LoRA above)
    lora_r: int = 8
    pair_weight: float = 0.5  # weight of the text–text pair loss
    max_texts: int = 20000  # texts sampled per epoch at most
    time_budget_s: float | None = None  # stop early (after a step) once exceeded
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "lora_r", "max_texts"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "epochs" else 1):
                raise ValueError(f"FineTuneConfig.{name} must be a {'non-negative' if name == 'epochs' else 'positive'} int, got {v!r}")
        if not isinstance(self.train_layers, int) or self.train_layers < -1:
            raise ValueError(f"FineTuneConfig.train_layers must be an int >= -1, got {self.train_layers!r}")
        if self.adapter not in _ADAPTERS:
            raise ValueError(f"FineTuneConfig.adapter must be one of {_ADAPTERS}, got {self.adapter!r}")
        for name in ("lr", "temperature"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"FineTuneConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not float(self.pair_weight) >= 0:
            raise ValueError(f"FineTuneConfig.pair_weight must be >= 0, got {self.pair_weight!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FineTuneConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FineTuneConfig keys: {unknown}")
        return cls(**d)


# ---------------------------------------------------------------------------------------- model parts
def _find_layers(model: Any) -> tuple[str, Any] | None:
    """``(attribute path, ModuleList)`` of the model's transformer layers, or None if not found."""
    import torch

    for path in _LAYER_PATHS:
        obj = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return path, obj
    return None


def _get_path(model: Any, path: str) -> Any:
    for attr in path.split("."):
        model = getattr(model, attr)
    return model


def _resolve_adapter(adapter: str, model: Any) -> str:
    if adapter != "auto":
        return adapter
    n = sum(p.numel() for p in model.parameters())
    return "lora" if n >= _LORA_AUTO_PARAMS else "full"


def _lora_targets(model: Any, layer_path: str | None, indices: list[int]) -> list[str]:
    """Full names of the ``nn.Linear`` modules inside the trainable layers (the whole model without a layer list)."""
    import torch

    prefixes = tuple(f"{layer_path}.{i}." for i in indices) if layer_path else ("",)
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(prefixes)]


def _prepare_model(base_model: Any, layer_path: str | None, indices: list[int], adapter: str, lora: dict[str, Any],
                   device: torch.device) -> Any:
    """A copy of ``base_model`` whose layers ``indices`` (all, without a layer list) learn: their
    weights (``full``) or injected LoRA weights (``lora``); everything else frozen."""
    model = copy.deepcopy(base_model).to(device).eval().requires_grad_(False)
    if adapter == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0, target_modules=lora["targets"])
        model = inject_adapter_in_model(cfg, model)
        model.eval().requires_grad_(False)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    elif adapter == "full" and layer_path is None:
        model.requires_grad_(True)  # no layer list found: the whole model learns
    elif adapter == "full":
        layers = _get_path(model, layer_path)
        for i in indices:
            layers[i].requires_grad_(True)
    return model.to(device)


def _top_forward(layers: Sequence[Any], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run ``layers`` (BERT-like: ``layer(hidden, additive 4-D mask)``) over cached hidden states."""
    import torch

    if not len(layers):
        return hidden
    ext = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    for layer in layers:
        out = layer(hidden, ext)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def _info_nce(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, temperature: float, symmetric: bool) -> torch.Tensor:
    import torch.nn.functional as F

    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    loss = F.cross_entropy(logits, labels)
    return (loss + F.cross_entropy(logits.T, labels)) / 2 if symmetric else loss


class _StopForward(Exception):
    """Raised by the capture hook once the lower layers' output is in hand."""


# ---------------------------------------------------------------------------------------- the tuned encoder
class TunedTextEncoder(TextEncoder):
    """A :class:`TextEncoder` fine-tuned into a target space: ``encode`` returns L2-normalised float32
    [n, target_dim] vectors (the head's output). Built by :func:`finetune_text` or :meth:`load`."""

    def __init__(self, base: TextEncoder, model: Any, head: Any, meta: dict[str, Any], *,
                 device: torch.device, history: list[dict[str, Any]] | None = None, seconds: float = 0.0) -> None:
        # No TextEncoder.__init__: the tokenizer and base weights come from ``base``, already loaded.
        self.base_model_id = base.model_id
        self.model_path = base.model_path
        self.tokenizer = base.tokenizer
        self.model, self.head, self.meta = model.eval(), head.eval(), meta
        self.device = device
        # reduced precision only on CUDA (like training); on the CPU the tuned vectors are fp32
        self.precision = base.precision if device.type == "cuda" else "fp32"
        self.max_length = int(meta["max_length"])
        self.batch_size = base.batch_size
        self.show_progress = base.show_progress
        self.text_dim = int(meta["text_dim"])
        self.dim = int(meta["target_dim"])
        self.config = FineTuneConfig.from_dict(meta["config"])
        self._use_token_types = base._use_token_types
        self.last_encoded_count = 0
        self.history = list(history or [])
        self.seconds = float(seconds)
        self.model_id = f"{base.model_id}+ft-{self.weights_sha256()[:12]}"

    def __repr__(self) -> str:
        return f"TunedTextEncoder(model_id={self.model_id!r}, device={str(self.device)!r}, dim={self.dim})"

    def trained_tensors(self) -> dict[str, torch.Tensor]:
        """The weights fine-tuning changed (top layers or LoRA, and the head), on the CPU, fp32."""
        out = {f"model.{n}": p.detach() for n, p in self.model.named_parameters() if n in set(self.meta["trained"])}
        out.update({f"head.{n}": p.detach() for n, p in self.head.named_parameters()})
        return {k: v.float().cpu().contiguous() for k, v in sorted(out.items())}

    def weights_sha256(self) -> str:
        """sha256 over the trained tensors and the settings that shape the vectors (max_length, adapter)."""
        h = hashlib.sha256()
        enc = {k: self.meta[k] for k in ("max_length", "adapter", "lora", "layer_path", "layer_indices")}
        h.update(json.dumps(enc, sort_keys=True).encode("utf-8"))
        for name, t in self.trained_tensors().items():
            h.update(f"{name}:{tuple(t.shape)}\n".encode("utf-8"))
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def pooled(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Mean-pooled last hidden states of the tuned model (text space, not normalised)."""
        hidden = self.model(**inputs).last_hidden_state.float()
        return _pool(hidden, inputs["attention_mask"])

    def _amp(self):
        return _autocast(self.device, self.precision)  # the tuned encoding runs fp32 on the CPU

    def _embed(self, inputs: dict[str, Any]) -> torch.Tensor:
        """The head's output (target space), L2-normalised: what :meth:`encode` returns per batch."""
        import torch.nn.functional as F

        return F.normalize(self.head(self.pooled(inputs)).float(), dim=1)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write the trained weights (safetensors) and the manifest (JSON) to ``folder``."""
        from .checkpoint import write_folder

        meta = {"format": FORMAT, "version": VERSION, **self.meta, "base_model_id": self.base_model_id,
                "model_id": self.model_id, "history": self.history, "seconds": self.seconds}
        return write_folder(folder, self.trained_tensors(), meta)

    @classmethod
    def load(cls, folder: str | os.PathLike, base: TextEncoder, *, device: str = "auto") -> TunedTextEncoder:
        """Rebuild a tuned encoder saved by :meth:`save` on top of ``base`` (which must be the base it was tuned from)."""
        from kg.errors import ModelError

        from .checkpoint import read_manifest, read_weights
        from .device import resolve_device

        meta = read_manifest(folder, FORMAT, VERSION, "tuned text encoder")
        if meta.get("base_model_id") != base.model_id:
            raise ModelError(f"{folder}: tuned from base text model {meta.get('base_model_id')!r}, "
                             f"but the given base is {base.model_id!r}")
        tensors = read_weights(folder, meta)
        dev = resolve_device(device)
        model, head = _rebuild(base, meta, tensors, dev, Path(folder))
        keep = {k: meta[k] for k in _META_KEYS}
        tuned = cls(base, model, head, keep, device=dev, history=meta.get("history"), seconds=meta.get("seconds", 0.0))
        if meta.get("model_id") not in (None, tuned.model_id):
            raise ModelError(f"{folder}: the weights give model id {tuned.model_id!r}, the manifest says {meta['model_id']!r}")
        return tuned


_META_KEYS = ("config", "max_length", "adapter", "lora", "layer_path", "layer_indices", "trained", "text_dim",
              "target_dim", "mode")


def _rebuild(base: TextEncoder, meta: dict[str, Any], tensors: dict[str, Any], device: torch.device,
             folder: Path) -> tuple[Any, Any]:
    """The tuned model and head from a manifest and its verified tensors."""
    import torch

    from kg.errors import ModelError

    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{folder}: the manifest lacks {missing}")
    model = _prepare_model(base.model, meta["layer_path"], meta["layer_indices"], meta["adapter"], meta["lora"], device)
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    expected = set(meta["trained"])
    if set(state) != expected:
        raise ModelError(f"{folder}: the weights file holds {len(state)} model tensors, the manifest names {len(expected)}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in state.items():
            if name not in params or params[name].shape != t.shape:
                raise ModelError(f"{folder}: tensor {name!r} does not fit the base model")
            params[name].copy_(t.to(device))
        head = torch.nn.Linear(int(meta["text_dim"]), int(meta["target_dim"])).to(device)
        try:
            head.load_state_dict({k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")})
        except RuntimeError as e:
            raise ModelError(f"{folder}: the head weights do not fit ({str(e).splitlines()[0]})") from None
    return model.requires_grad_(False), head.requires_grad_(False)


def _autocast(device: torch.device, precision: str) -> Any:
    import torch

    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# ---------------------------------------------------------------------------------------- training
def _check_inputs(texts: Sequence[str], targets: Any, pairs: Any) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    texts = _check_texts(texts)
    n = len(texts)
    if n < 2:
        raise ValueError(f"fine-tuning needs at least 2 texts, got {n}")
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != n or targets.shape[1] < 1:
        raise ValueError(f"targets must be [n={n}, d>=1], got shape {targets.shape}")
    if not np.issubdtype(targets.dtype, np.number) or not np.isfinite(targets).all():
        raise ValueError("targets must be finite numbers")
    if pairs is not None:
        pairs = np.asarray(pairs)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
            raise ValueError(f"pairs must be an int array [m, 2] of text rows, got {pairs.dtype} {pairs.shape}")
        if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
            raise ValueError(f"pairs hold row indices outside [0, {n})")
        pairs = pairs.astype(np.int64) if len(pairs) else None
    return texts, np.ascontiguousarray(targets, dtype=np.float32), pairs


def _plan(encoder: TextEncoder, config: FineTuneConfig, target_dim: int) -> dict[str, Any]:
    """What learns: layer path and indices, resolved adapter, LoRA targets, mode, max_length."""
    found = _find_layers(encoder.model)
    layer_path, indices = (found[0], []) if found else (None, [])
    if found:
        n_layers = len(found[1])
        k = n_layers if config.train_layers == -1 else min(config.train_layers, n_layers)
        indices = list(range(n_layers - k, n_layers))
    elif config.train_layers != 0:
        warnings.warn(f"{type(encoder.model).__name__}: no transformer layer list found; training all its weights "
                      "without caching (slow)", stacklevel=3)
    learns = bool(indices) or (not found and config.train_layers != 0)
    adapter = _resolve_adapter(config.adapter, encoder.model) if learns else "head"
    lora = None
    if adapter == "lora":
        lora = {"r": config.lora_r, "alpha": 2 * config.lora_r, "targets": _lora_targets(encoder.model, layer_path, indices)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a max_length above the model's limit is clamped silently here
        max_length = encoder._truncation_limit(config.max_length)
    return {"config": config.to_dict(), "max_length": max_length, "adapter": adapter, "lora": lora,
            "layer_path": layer_path, "layer_indices": indices, "text_dim": int(encoder.dim),
            "target_dim": int(target_dim), "mode": "cached" if found else "uncached"}


def _epoch_plan(n: int, pairs: np.ndarray | None, config: FineTuneConfig) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per epoch: the text-row batches and the pair-row batches of its steps (seeded)."""
    rng = np.random.default_rng(config.seed)
    plan = []
    for _ in range(config.epochs):
        rows = rng.permutation(n)[: config.max_texts]
        batches = [b for b in np.array_split(rows, range(config.batch_size, len(rows), config.batch_size)) if len(b) >= 2]
        pair_batches: list[np.ndarray] = []
        if pairs is not None and config.pair_weight > 0 and batches:
            pbs = min(config.batch_size, len(pairs))  # <= len(pairs): no pair twice in one batch
            perm = rng.permutation(len(pairs))[: max(config.max_texts, pbs)]
            pair_batches = list(np.resize(perm, len(batches) * pbs).reshape(len(batches), pbs))
        plan.append((batches, pair_batches))
    return plan


class _Features:
    """Input of the trainable part for each text: the cached output of the frozen lower layers
    (``cached`` mode), or token ids run through the whole model each step (``uncached``)."""

    def __init__(self, tuned: TunedTextEncoder, texts: list[str], rows: np.ndarray) -> None:
        self.tuned = tuned
        self.ids, self.type_ids = tuned._tokenize(texts)
        self.lengths = np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(texts))
        self.states: dict[int, Any] = {}
        self.top: list[Any] = []
        if tuned.meta["mode"] == "cached":
            layers = _get_path(tuned.model, tuned.meta["layer_path"])
            start = len(layers) - len(tuned.meta["layer_indices"])
            self.top = list(layers[start:])
            if not self._cache_lower(layers, start, rows):
                warnings.warn("the cached-layer forward does not match the model's own; training without the cache "
                              "(slower)", stacklevel=3)
                tuned.meta["mode"] = "uncached"
                self.states.clear()

    def _cache_lower(self, layers: Any, start: int, rows: np.ndarray) -> bool:
        """Run the frozen layers below ``start`` once over ``rows``; False if our top forward of the
        first batch disagrees with the model's own forward (then the cache is not used)."""
        import torch

        captured: dict[str, Any] = {}
        hook_on = start < len(layers)

        def hook(_module: Any, args: tuple, kwargs: dict) -> None:
            captured["h"] = args[0] if args else kwargs["hidden_states"]
            if captured.get("stop"):
                raise _StopForward

        handle = layers[start].register_forward_pre_hook(hook, with_kwargs=True) if hook_on else None
        order = rows[np.argsort(-self.lengths[rows], kind="stable")]
        nbytes = int(self.lengths[rows].sum()) * self.tuned.text_dim * 4
        store = torch.float32 if nbytes <= 1 << 30 else torch.float16  # > 1 GiB of fp32 states: keep fp16
        ok, tuned = True, self.tuned
        try:
            with torch.inference_mode(), _autocast(tuned.device, tuned.precision):
                for s in range(0, len(order), 128):
                    idx = order[s: s + 128]
                    inputs = tuned._batch(self.ids, self.type_ids, idx, self.lengths)
                    captured["stop"] = hook_on and s > 0
                    with contextlib.suppress(_StopForward):
                        out = tuned.model(**inputs).last_hidden_state
                    h = captured["h"] if hook_on else out
                    if s == 0 and hook_on:
                        mask = inputs["attention_mask"]
                        mine = _top_forward(self.top, h, mask) * mask[..., None]
                        ok = bool(torch.allclose(mine.float(), (out * mask[..., None]).float(), atol=_CHECK_ATOL))
                    for j, i in enumerate(idx):
                        self.states[int(i)] = h[j, : self.lengths[i]].to(store).clone()
        finally:
            if handle is not None:
                handle.remove()
        return ok

    def pooled(self, idx: np.ndarray) -> torch.Tensor:
        """Mean-pooled text vectors of rows ``idx`` (in that order), with gradients."""
        import torch

        tuned, lens = self.tuned, self.lengths[idx]
        if tuned.meta["mode"] == "uncached":
            order = np.argsort(-lens, kind="stable")
            pooled = tuned.pooled(tuned._batch(self.ids, self.type_ids, idx[order], self.lengths))
            return pooled[torch.from_numpy(np.argsort(order)).to(pooled.device)]
        width = max(int(lens.max()), 1)
        hidden = torch.zeros(len(idx), width, tuned.text_dim, device=tuned.device)
        for j, i in enumerate(idx):
            hidden[j, : lens[j]] = self.states[int(i)]
        mask = torch.from_numpy(np.arange(width)[None, :] < lens[:, None]).to(tuned.device)
        return _pool(_top_forward(self.top, hidden, mask).float(), mask)


def _step_loss(feats: _Features, head: Any, targets: torch.Tensor, target_ids: np.ndarray, idx: np.ndarray,
               pair_idx: np.ndarray | None, pairs: np.ndarray | None, config: FineTuneConfig) -> torch.Tensor:
    """Target InfoNCE of the batch ``idx`` plus ``pair_weight`` x pair InfoNCE of ``pairs[pair_idx]``;
    ``targets`` holds the distinct target rows, ``target_ids`` each text's row in it."""
    import torch

    dev = targets.device
    ab = pairs[pair_idx] if pair_idx is not None else np.empty((0, 2), dtype=np.int64)
    rows, inv = np.unique(np.concatenate([idx, ab[:, 0], ab[:, 1]]), return_inverse=True)
    pooled = feats.pooled(rows)
    text = pooled[torch.from_numpy(inv[: len(idx)]).to(dev)]
    # One-way text→target: targets are fixed points and texts sharing a target (deduplicated below,
    # as one class) must not be pushed apart, which a target→text direction would do.
    uniq, labels = np.unique(target_ids[idx], return_inverse=True)
    loss = torch.zeros((), device=dev)
    if len(uniq) >= 2:
        loss = _info_nce(head(text), targets[torch.from_numpy(uniq).to(dev)], torch.from_numpy(labels).to(dev),
                         config.temperature, symmetric=False)
    if len(ab) >= 2:
        a = pooled[torch.from_numpy(inv[len(idx): len(idx) + len(ab)]).to(dev)]
        b = pooled[torch.from_numpy(inv[len(idx) + len(ab):]).to(dev)]
        # symmetric: a pair has no direction (co-interaction, triple endpoints)
        loss = loss + config.pair_weight * _info_nce(a, b, torch.arange(len(ab), device=dev), config.temperature, True)
    return loss


def _train(tuned: TunedTextEncoder, feats: _Features, targets: np.ndarray, pairs: np.ndarray | None,
           plan: list, config: FineTuneConfig, progress: bool, t0: float) -> list[dict[str, Any]]:
    """The optimisation loop; returns the per-epoch history."""
    import torch
    from tqdm.auto import tqdm

    layer_params = [p for p in tuned.model.parameters() if p.requires_grad]
    groups = [{"params": list(tuned.head.parameters()), "lr": 10 * config.lr}]
    if layer_params:
        groups.append({"params": layer_params, "lr": config.lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    distinct, target_ids = np.unique(targets, axis=0, return_inverse=True)  # rows sharing a target: one class
    target_ids = target_ids.reshape(-1)
    targets_t = torch.from_numpy(np.ascontiguousarray(distinct)).to(tuned.device)
    bar = tqdm(total=sum(len(b) for b, _ in plan), desc="fine-tune", unit="step", disable=not progress)
    history: list[dict[str, Any]] = []
    stop = False
    tuned.head.train()
    for epoch, (batches, pair_batches) in enumerate(plan):
        e0, losses = time.perf_counter(), []
        for s, idx in enumerate(batches):
            with _autocast(tuned.device, tuned.precision):
                loss = _step_loss(feats, tuned.head, targets_t, target_ids, idx,
                                  pair_batches[s] if pair_batches else None, pairs, config)
            opt.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            stop = config.time_budget_s is not None and time.perf_counter() - t0 > config.time_budget_s
            if stop:
                break
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                        "seconds": time.perf_counter() - e0, "steps": len(losses)})
        if stop:
            break
    bar.close()
    tuned.head.eval()
    return history


def finetune_text(encoder: TextEncoder, texts: Sequence[str], targets: np.ndarray, *,
                  pairs: np.ndarray | None = None, config: FineTuneConfig | None = None,
                  device: str = "auto", progress: bool = False) -> TunedTextEncoder:
    """Fine-tune ``encoder`` so that ``texts[k]`` lands next to ``targets[k]`` (float [n, d]).

    Loss: in-batch InfoNCE between ``normalize(head(pool(text)))`` and ``normalize(target)`` plus
    ``config.pair_weight`` x in-batch InfoNCE between the pooled texts of ``pairs[:, 0]`` and
    ``pairs[:, 1]`` (row indices into ``texts``). Only the top ``config.train_layers`` layers (their
    weights or LoRA) and the linear head learn; ``encoder`` itself is left unchanged. Deterministic
    for a given ``config.seed`` on the CPU. Returns the :class:`TunedTextEncoder`.
    """
    import torch

    from .device import resolve_device

    t0 = time.perf_counter()
    config = FineTuneConfig() if config is None else config
    texts, targets, pairs = _check_inputs(texts, targets, pairs)
    dev = resolve_device(device)
    meta = _plan(encoder, config, targets.shape[1])
    with torch.random.fork_rng(devices=[]):  # seeded head / LoRA init without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = _prepare_model(encoder.model, meta["layer_path"], meta["layer_indices"], meta["adapter"],
                               meta["lora"], dev)
        head = torch.nn.Linear(encoder.dim, targets.shape[1]).to(dev)
    meta["trained"] = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    tuned = TunedTextEncoder(encoder, model, head, meta, device=dev)
    plan = _epoch_plan(len(texts), pairs, config)
    used = [np.concatenate(b) for batches, pbs in plan for b in (batches, [pairs[p].ravel() for p in pbs]) if b]
    rows = np.unique(np.concatenate(used)) if used else np.empty(0, dtype=np.int64)
    feats = _Features(tuned, texts, rows)
    tuned.history = _train(tuned, feats, targets, pairs, plan, config, progress, t0)
    tuned.model.requires_grad_(False)
    tuned.head.requires_grad_(False)
    tuned.seconds = time.perf_counter() - t0
    tuned.model_id = f"{encoder.model_id}+ft-{tuned.weights_sha256()[:12]}"
    return tuned
