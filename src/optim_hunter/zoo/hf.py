"""Real models: a Hugging Face causal LM, from a local folder or the HF cache, as a TransformerBridge.

`load("gpt2")`, `load("meta-llama/Llama-3.1-8B")` or `load("/path/to/saved/model")` never touch
the network: a name resolves to its snapshot in the Hugging Face cache (`local_files_only`), and a
model that is not there raises `ModelNotAvailable` saying what to download and where. The bridge
comes from `TransformerBridge.boot_transformers`, so hook names and weight properties are those of
every other zoo model.
"""

from __future__ import annotations

from pathlib import Path

import torch

_PATH_PREFIXES = ("/", "./", "../", "~")


class ModelNotAvailable(FileNotFoundError):
    """The requested Hugging Face model is neither a local folder nor in the local HF cache."""


def _hub_cache(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


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
        return path
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
    return Path(folder)


def load(name_or_path: str, *, device: str | None = "cpu", dtype: torch.dtype = torch.float32, cache_dir=None):
    """A `TransformerBridge` (with `.tokenizer`) around the local HF model `name_or_path`."""
    folder = resolve(name_or_path, cache_dir)
    from transformer_lens import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype)
    bridge.eval()
    return bridge
