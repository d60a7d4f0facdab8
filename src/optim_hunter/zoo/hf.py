"""Real models: a Hugging Face causal LM, from a local folder or the HF cache, as a TransformerBridge.

`load("gpt2")`, `load("meta-llama/Llama-3.1-8B")` or `load("/path/to/saved/model")` never touch
the network: a name resolves to its snapshot in the Hugging Face cache (`local_files_only`), and a
model that is not there raises `ModelNotAvailable` saying what to download and where. The bridge
comes from `TransformerBridge.boot_transformers`, so hook names and weight properties are those of
every other zoo model.

The bridge forces eager attention (hooks read the pattern) and routes every module through hook
points, which costs about 2x on a CPU. `bridge(...)` therefore keeps a *fast twin*: the same HF
model with fused (SDPA) attention, sharing every parameter tensor with the bridge, so a weight
edit is seen by both. `fast_twin(model)` (`optim_hunter.core.twins`) returns it only while no hook is attached to the bridge;
decoding and plain forward passes use it then (`optim_hunter.analysis.kv_decoding`), and anything that
patches or ablates falls back to the hooked bridge.

Device and dtype: `load` puts the model on `devices.validated()` ($OPTIM_HUNTER_DEVICE, CUDA when
there) in `precision.inference_dtype` ($OPTIM_HUNTER_DTYPE, bfloat16 on CUDA, float32 on the CPU), both
validated before any file is read; the twin shares the placed weights, so every fast path runs there.

Placement across devices: `OPTIM_HUNTER_DEVICE_MAP` (`auto`, `balanced`, a JSON object) and
`OPTIM_HUNTER_N_DEVICES` (an integer) are resolved as `boot_transformers` resolves them; the HF model
is loaded with that placement and then bridged, so the fast twin (and with it the key/value cache:
one forward pass per new token, not one over the whole prompt) is kept there too.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from optim_hunter.analysis import flops
from optim_hunter.core import devices, precision, twins

_PATH_PREFIXES = ("/", "./", "../", "~")


class ModelNotAvailable(FileNotFoundError):
    """The requested Hugging Face model is neither a local folder nor in the local HF cache."""


def _hub_cache(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# any one of these is a saved tokenizer (fast, sentencepiece, BPE or WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _check_tokenizer(folder: Path, name: str) -> Path:
    """`folder`, if it holds a tokenizer: without one, transformers would build a one-token
    tokenizer that fails every prompt silently."""
    if not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise ModelNotAvailable(
            f"hf:{name}: {folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}). "
            f"Save the model's tokenizer beside it with `tokenizer.save_pretrained('{folder}')`."
        )
    return folder


def resolve(name_or_path: str, cache_dir: str | Path | None = None) -> Path:
    """The local folder holding `name_or_path` (config.json and weights), or ModelNotAvailable."""
    name = name_or_path.strip()
    if not name:
        raise ValueError("empty Hugging Face model name: use hf:<name-or-path>, e.g. hf:gpt2")
    path = Path(name).expanduser()
    looks_like_path = name.startswith(_PATH_PREFIXES) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            raise ModelNotAvailable(
                f"hf:{name}: no such folder. Save a model there with "
                f"`model.save_pretrained('{name}')` and `tokenizer.save_pretrained('{name}')`, "
                f"or name a Hugging Face model id instead (e.g. hf:gpt2)."
            )
        if not (path / "config.json").exists():
            raise ModelNotAvailable(f"hf:{name}: the folder has no config.json; it is not a saved HF model")
        return _check_tokenizer(path, name)
    hub = _hub_cache(cache_dir)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(name, cache_dir=str(hub), local_files_only=True)
    except HFValidationError as err:
        raise ValueError(f"hf:{name} is neither an existing folder nor a valid model id: {err}") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise ModelNotAvailable(
            f"hf:{name} is not available offline: it is not in the Hugging Face cache ({hub}) and "
            f"no folder of that name exists. Download it once where there is network access:\n"
            f"    hf download {name}        (older huggingface_hub: huggingface-cli download {name})\n"
            f"which fills {hub} (set HF_HOME or HF_HUB_CACHE to use another cache), or save the "
            f"model and tokenizer with save_pretrained into a folder and load hf:/path/to/folder."
        ) from None
    if not (Path(folder) / "config.json").exists():
        raise ModelNotAvailable(
            f"hf:{name}: the cached snapshot {folder} has no config.json (an incomplete download?); "
            f"run `hf download {name}` again"
        )
    return _check_tokenizer(Path(folder), name)


def load(
    name_or_path: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
    cache_dir=None,
):
    """A `TransformerBridge` (with `.tokenizer`) around the local HF model `name_or_path`, on
    `device` in `dtype` (None: the settings, `devices.validated()` and `precision.inference_dtype`).

    With a device placement set (`devices.placement()`), the HF model is loaded across the devices it
    names and bridged with its fast twin, as on one device."""
    placed = devices.placement()
    if placed:
        target = devices.validated() if device is None else devices.device(str(device))
    else:
        target = devices.device(None if device is None else str(device))
    dtype = precision.inference_dtype(target) if dtype is None else dtype
    folder = resolve(name_or_path, cache_dir)
    from transformers import AutoModelForCausalLM

    if placed:
        from transformer_lens.utilities.multi_gpu import resolve_device_map

        device_map, max_memory = resolve_device_map(placed.get("n_devices"), placed.get("device_map"), None)
        kwargs = {"device_map": device_map} if device_map is not None else {}
        if max_memory is not None:
            kwargs["max_memory"] = max_memory
        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, **kwargs)
        if device_map is None:  # N_DEVICES=1: one device
            hf_model = hf_model.to(target)
    else:
        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(target)
    return bridge(hf_model, None, str(folder))  # the bridge loads the folder's tokenizer


def bridge(hf_model: Any, tokenizer: Any, name: str, *, keep_tokenizer: bool = False) -> Any:
    """A hooked `TransformerBridge` around `hf_model`, with a fast twin kept beside it.
    `tokenizer` None: the bridge loads the one saved with `name` (a folder).

    TransformerLens reloads a tokenizer with `add_bos_token=True`; whether that takes effect
    depends on where the tokenizer came from (a GGUF ignores it, a folder honours it).
    `keep_tokenizer` keeps `tokenizer` exactly as given, so `tokenizer(text)` encodes as the
    released model's own tokenizer does (`to_tokens` still prepends BOS, as always)."""
    from transformer_lens import TransformerBridge

    hf_model.eval()
    # The twin must be copied before the bridge rewires hf_model's modules in place; the memo
    # makes the copy share every parameter (and so any later weight edit) with the bridge.
    twin = copy.deepcopy(hf_model, memo={id(p): p for p in hf_model.parameters()})
    twin.set_attn_implementation("sdpa")
    model = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer)
    if keep_tokenizer and model.tokenizer is not tokenizer:
        from transformer_lens.model_bridge.sources._bridge_builder import detect_tokenizer_bos_eos

        # the property setter would reload it again; the bridge's own fields are set as its
        # boot step sets them
        model._tokenizer = tokenizer
        model.cfg.tokenizer_prepends_bos, model.cfg.tokenizer_appends_eos = detect_tokenizer_bos_eos(tokenizer)
    model.eval()
    twins.attach(model, twin)
    for module in (model.original_model, twin):  # a chapter's passes, for `make bench`'s compute floor
        flops.watch(module)
    return model
