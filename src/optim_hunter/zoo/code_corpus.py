"""Natural text for the induction-heads chapter: the CPython standard library, a BPE trained on
it, and the zoo family `attn-only-2l-code` trained on it.

Corpus. The `.py` files of the running interpreter's standard library
(`sysconfig.get_paths()["stdlib"]`, read from disk, nothing downloaded), without `site-packages`
and, unless `CorpusConfig.include_tests`, without test packages (`test`, `tests`, `idle_test`).
Files are split into training and held-out sets by a hash of their relative path (so the split
of a file never depends on which other files exist), and each set is one token array in sorted
path order, every file preceded by `<|endoftext|>` (id 0: the separator, and the BOS of the
prefix-matching sequences). `max_bytes` caps the text used (files taken in hash order, a
deterministic sample across the library): tests and the smoke profile use a slice.

Tokenizer. A byte-level BPE (`tokenizers`, GPT-2's pre-tokenisation) with `vocab_size` tokens,
trained on about `bpe_bytes` of training text (whole files; seconds), served as a
`transformers.PreTrainedTokenizerFast`.

Cache. `settings.cache_dir()/corpora/cpython-stdlib-<key>/` holds `tokenizer` (the tokenizer's
JSON as a byte tensor) and `tokens` (the two token arrays) as `optim_hunter.core.training` checkpoints:
safetensors plus a sidecar with the content hash, checked on every load, so a damaged file is
rebuilt with a warning and never used. The key hashes the corpus configuration, this module's
`CORPUS_VERSION`, the interpreter version and the list of files with their sizes.

Family. `attn-only-2l-code`: the attention-only model of `zoo.induction` (same `transformer.LM`,
fused training forward, per-token loss, trainer, log-spaced snapshots) on random windows of the
training tokens; `hooked` returns its TransformerLens bridge with the BPE as `.tokenizer`. Its
zoo cache key covers the corpus configuration, which includes the interpreter version
(`CorpusConfig.stdlib`), so another Python trains its own model on its own library.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import platform
import sysconfig
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor, nn

from optim_hunter.core import checkpoints, locks, settings, training, transformer
from optim_hunter.zoo import induction
from optim_hunter.zoo.registry import Family

CORPUS_VERSION = "1"  # bump when a change here changes the tokenizer or the token arrays
EOT = "<|endoftext|>"
SPECIALS = (EOT,)
MIN_VOCAB = 256 + len(SPECIALS)  # every byte, plus the specials
TEST_DIRS = frozenset({"test", "tests", "idle_test"})


# --- the files -----------------------------------------------------------------------------------


def stdlib_root() -> Path:
    """The standard-library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path | None = None, *, include_tests: bool = False) -> list[str]:
    """Relative POSIX paths of the library's `.py` files, sorted; `site-packages` never, test
    packages only with `include_tests`. (Listed once per process: the library does not change.)"""
    return list(_source_files(Path(root) if root is not None else stdlib_root(), include_tests))


@functools.lru_cache(maxsize=8)
def _source_files(root: Path, include_tests: bool) -> tuple[str, ...]:
    if not root.is_dir():
        raise FileNotFoundError(f"no standard library at {root}")
    out = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if "site-packages" in parts or "__pycache__" in parts or not path.is_file():
            continue
        if not include_tests and TEST_DIRS.intersection(parts[:-1]):
            continue
        out.append(Path(*parts).as_posix())
    return tuple(sorted(out))


def rank(path: str, seed: int = 0) -> float:
    """A deterministic pseudo-random number in [0, 1) for a relative path."""
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_files(paths: list[str], held_out_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training, held-out) paths, each sorted: a file is held out when its rank is below the
    fraction. At least one file lands on each side."""
    if not 0 < held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    if len(paths) < 2:
        raise ValueError(f"need at least 2 files to split, got {len(paths)}")
    ordered = sorted(paths, key=lambda p: (rank(p, seed), p))
    n_held = min(len(paths) - 1, max(1, sum(rank(p, seed) < held_out_fraction for p in paths)))
    return sorted(ordered[n_held:]), sorted(ordered[:n_held])


def read_text(root: Path, path: str) -> str:
    """A source file as text (undecodable bytes replaced: a few files are not UTF-8)."""
    return (root / path).read_bytes().decode("utf-8", errors="replace")


def take_bytes(root: Path, paths: list[str], budget: int, seed: int = 0) -> list[str]:
    """Files in rank order until their sizes reach `budget` bytes (at least one; 0 = all),
    returned sorted."""
    if budget <= 0:
        return sorted(paths)
    chosen, total = [], 0
    for path in sorted(paths, key=lambda p: (rank(p, seed), p)):
        if chosen and total >= budget:
            break
        chosen.append(path)
        total += (root / path).stat().st_size
    return sorted(chosen)


# --- configuration -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Which text, how it is split, and the BPE. `max_bytes` 0 uses every file."""

    vocab_size: int = 4096
    bpe_bytes: int = 3_000_000  # training text the BPE learns its merges from
    max_bytes: int = 0  # text tokenised in all (training + held out); 0: every file
    held_out_fraction: float = 0.05
    include_tests: bool = False
    split_seed: int = 0
    stdlib: str = dataclasses.field(default_factory=platform.python_version)  # in every cache key

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < MIN_VOCAB:
            raise ValueError(
                f"vocab_size must be at least {MIN_VOCAB} (256 bytes + {len(SPECIALS)} special), "
                f"got {self.vocab_size!r}"
            )
        if self.bpe_bytes < 1:
            raise ValueError(f"bpe_bytes must be positive, got {self.bpe_bytes}")
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0: every file), got {self.max_bytes}")
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in (0, 1), got {self.held_out_fraction}")


@dataclasses.dataclass(frozen=True)
class Files:
    root: Path
    train: list[str]
    held_out: list[str]


def files(cfg: CorpusConfig) -> Files:
    """The files of each split after the `max_bytes` cap (held out: its fraction of the cap)."""
    root = stdlib_root()
    paths = source_files(root, include_tests=cfg.include_tests)
    train, held = split_files(paths, cfg.held_out_fraction, cfg.split_seed)
    if cfg.max_bytes:
        held_budget = max(1, int(cfg.max_bytes * cfg.held_out_fraction))
        train = take_bytes(root, train, cfg.max_bytes - held_budget, cfg.split_seed)
        held = take_bytes(root, held, held_budget, cfg.split_seed)
    return Files(root, train, held)


def corpus_key(cfg: CorpusConfig, selected: Files | None = None) -> str:
    """16 hex digits over the configuration, code version, interpreter and the files' sizes."""
    selected = selected or files(cfg)
    manifest = [
        [split, path, (selected.root / path).stat().st_size]
        for split, paths in (("train", selected.train), ("held_out", selected.held_out)) for path in paths
    ]
    return checkpoints.fingerprint(
        {"config": cfg, "version": CORPUS_VERSION, "python": platform.python_version(), "files": manifest}
    )[:16]


def corpus_dir(cfg: CorpusConfig, selected: Files | None = None) -> Path:
    return settings.cache_dir() / "corpora" / f"cpython-stdlib-{corpus_key(cfg, selected)}"


# --- tokenizer -----------------------------------------------------------------------------------


def train_bpe(texts: list[str], vocab_size: int):
    """A byte-level BPE `tokenizers.Tokenizer` with `vocab_size` tokens (`<|endoftext|>` first)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def wrap_tokenizer(backend: Any):
    """The `tokenizers.Tokenizer` as a Hugging Face fast tokenizer. `<|endoftext|>` is BOS, EOS
    and padding, and `tokenizer(text)` prepends it, as training saw every file start (and as
    TransformerLens expects: a tokenizer that does not add BOS itself is reloaded by name)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A $B", special_tokens=[(EOT, backend.token_to_id(EOT))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=EOT, eos_token=EOT, pad_token=EOT,
        add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False,
        model_max_length=1_000_000, name_or_path="optim_hunter/cpython-stdlib-bpe",
    )


def _bytes_tensor(text: str) -> Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def _load_tokenizer(path: Path, cfg: CorpusConfig):
    """The cached backend tokenizer and its hash; CheckpointError if damaged or not this config's."""
    from tokenizers import Tokenizer

    tensors, meta = checkpoints.load_checkpoint(path)
    try:
        text = bytes(tensors["json"].numpy()).decode("utf-8")
        backend = Tokenizer.from_str(text)
    except Exception as err:  # a missing tensor, bad UTF-8, or the bare Exception tokenizers raises
        raise checkpoints.CheckpointError(f"tokenizer {path}: unreadable: {err}") from err
    if backend.get_vocab_size() != cfg.vocab_size or backend.token_to_id(EOT) != 0:
        raise checkpoints.CheckpointError(f"tokenizer {path}: not a {cfg.vocab_size}-token BPE with {EOT} first")
    return backend, checkpoints.content_hash(tensors)


def _build_tokenizer(path: Path, cfg: CorpusConfig, selected: Files):
    sample = take_bytes(selected.root, selected.train, cfg.bpe_bytes, cfg.split_seed)
    texts = [read_text(selected.root, p) for p in sample]
    backend = train_bpe(texts, cfg.vocab_size)
    if backend.get_vocab_size() != cfg.vocab_size:
        raise ValueError(
            f"{sum(map(len, texts)):,} characters of BPE training text yield only {backend.get_vocab_size()} "
            f"tokens, not vocab_size {cfg.vocab_size}: raise bpe_bytes (or max_bytes) or lower vocab_size"
        )
    tensors = {"json": _bytes_tensor(backend.to_str())}
    checkpoints.save_checkpoint(path, tensors, {"config": cfg, "bpe_files": len(sample)})
    return backend, checkpoints.content_hash(tensors)


def _cached_tokenizer(directory: Path, cfg: CorpusConfig, selected: Files):
    path = directory / "tokenizer"
    if checkpoints.checkpoint_exists(path):
        try:
            return _load_tokenizer(path, cfg)
        except checkpoints.CheckpointError as err:
            warnings.warn(f"corpus tokenizer: {err}; retraining it", stacklevel=3)
            checkpoints.remove_checkpoint(path)
    return _build_tokenizer(path, cfg, selected)


def tokenizer(cfg: CorpusConfig):
    """The corpus's trained BPE as a `PreTrainedTokenizerFast` (trained and cached on first use)."""
    selected = files(cfg)
    directory = corpus_dir(cfg, selected)
    with locks.exclusive(directory):
        backend, _ = _cached_tokenizer(directory, cfg, selected)
    return wrap_tokenizer(backend)


# --- token arrays --------------------------------------------------------------------------------


def encode_files(backend: Any, root: Path, paths: list[str]) -> np.ndarray:
    """One int32 array: for every file in order, `<|endoftext|>` then the file's tokens."""
    encoded = backend.encode_batch([read_text(root, p) for p in paths], add_special_tokens=False)
    eot = backend.token_to_id(EOT)
    pieces = []
    for enc in encoded:
        pieces.append(np.array([eot], dtype=np.int32))
        pieces.append(np.asarray(enc.ids, dtype=np.int32))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)


@dataclasses.dataclass
class Corpus:
    """The tokenised corpus: `train` and `held_out` token arrays (int64 tensors) and the BPE."""

    config: CorpusConfig
    tokenizer: Any  # PreTrainedTokenizerFast
    train: Tensor
    held_out: Tensor
    train_files: list[str]
    held_out_files: list[str]
    path: Path

    def split(self, name: str) -> Tensor:
        if name not in ("train", "held_out"):
            raise ValueError(f"split must be 'train' or 'held_out', got {name!r}")
        return self.train if name == "train" else self.held_out

    def windows(
        self, n: int, length: int, seed: int | tuple[int, ...], split: str = "train"
    ) -> Int[Tensor, "n pos"]:
        """`n` windows of `length` consecutive tokens at random offsets (deterministic in `seed`)."""
        tokens = self.split(split)
        if length < 2:
            raise ValueError(f"a window needs at least 2 tokens, got {length}")
        if length > len(tokens):
            raise ValueError(
                f"windows of {length} tokens do not fit the {split} split of {len(tokens)} tokens: "
                "use a shorter context or more text (max_bytes)"
            )
        starts = np.random.default_rng(seed).integers(0, len(tokens) - length + 1, size=n)
        return tokens[torch.from_numpy(starts)[:, None] + torch.arange(length)]


def load(cfg: CorpusConfig) -> Corpus:
    """The tokenised corpus (tokenizer trained and text encoded on first use, then cached)."""
    selected = files(cfg)
    directory = corpus_dir(cfg, selected)
    path = directory / "tokens"
    with locks.exclusive(directory):
        backend, tok_hash = _cached_tokenizer(directory, cfg, selected)
        arrays = None
        if checkpoints.checkpoint_exists(path):
            try:
                tensors, meta = checkpoints.load_checkpoint(path)
                if meta.get("tokenizer_sha256") != tok_hash or not {"train", "held_out"} <= tensors.keys():
                    raise checkpoints.CheckpointError(f"tokens {path}: encoded with another tokenizer")
                arrays = tensors
            except checkpoints.CheckpointError as err:
                warnings.warn(f"corpus tokens: {err}; re-encoding", stacklevel=2)
                checkpoints.remove_checkpoint(path)
        if arrays is None:
            arrays = {
                "train": torch.from_numpy(encode_files(backend, selected.root, selected.train)),
                "held_out": torch.from_numpy(encode_files(backend, selected.root, selected.held_out)),
            }
            meta = {"config": cfg, "tokenizer_sha256": tok_hash, "train_files": len(selected.train),
                    "held_out_files": len(selected.held_out)}
            checkpoints.save_checkpoint(path, arrays, meta)
    return Corpus(
        cfg, wrap_tokenizer(backend), arrays["train"].long(), arrays["held_out"].long(),
        selected.train, selected.held_out, directory,
    )


# --- the zoo family attn-only-2l-code ------------------------------------------------------------

VERSION = "1"
DESCRIPTION = "2-layer attention-only model on the CPython standard library (byte-level BPE)"


@dataclasses.dataclass(frozen=True)
class CodeConfig:
    """The model, its optimisation and its corpus."""

    arch: transformer.Arch
    train: training.TrainConfig
    corpus: CorpusConfig
    batch_size: int = 32
    data_seed: int = 1234

    def __post_init__(self) -> None:
        if self.arch.d_vocab != self.corpus.vocab_size:
            raise ValueError(f"the model's d_vocab {self.arch.d_vocab} != the BPE's {self.corpus.vocab_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def n_ctx(self) -> int:
        return self.arch.n_ctx


def make_config(
    *, steps: int, snapshots: int, n_layers: int = 2, d_model: int = 64, n_heads: int = 4, n_ctx: int = 256,
    vocab_size: int = 320, batch_size: int = 16, lr: float = 1e-2, bpe_bytes: int = 3_000_000,
    max_bytes: int = 0, threads: int | None = 1, precision: str = "fp32", eval_every: int = 0,
) -> CodeConfig:
    arch = transformer.Arch(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=n_ctx, d_vocab=vocab_size, attn_only=True
    )
    train = training.TrainConfig(
        steps=steps, lr=lr, warmup_steps=min(50, steps // 10), schedule="constant", weight_decay=0.0,
        eval_every=eval_every, snapshots=snapshots, threads=threads, precision=precision,
    )
    corpus = CorpusConfig(vocab_size=vocab_size, bpe_bytes=bpe_bytes, max_bytes=max_bytes)
    return CodeConfig(arch=arch, train=train, corpus=corpus, batch_size=batch_size)


def config(profile: str | None = None) -> CodeConfig:
    """Full: 5000 steps of 16 x 256 tokens, about 330 s on one CPU core (one thread: a second
    gains 3% here, 64 against 66 ms a step, and `make book` trains two models side by side;
    the thread count is part of the configuration because it changes the float results). Chosen to give
    induction heads their best chance in about 3 minutes (trial runs of 4000-5000 steps, best
    layer-1 prefix-matching score): the issue's d_model 128 / BPE 4096 / context 256 costs
    ~390 ms a step (1500 steps in ~9 min), d_model 64 ~35 ms. A smaller vocabulary cuts
    identifiers into more pieces, so copying them by induction pays more often: 1024 tokens
    (context 128, lr 3e-3) reached 0.04, 512 ~0.11 (0.12 with lr 2e-2), 320 0.155."""
    return settings.pick(
        settings.profile(profile),
        full=make_config(steps=5000, snapshots=100),
        smoke=make_config(steps=300, snapshots=30, d_model=32, n_ctx=64, batch_size=16,
                          bpe_bytes=300_000, max_bytes=1_000_000),
    )


def tiny_config() -> CodeConfig:
    """Builds its corpus and trains in about a second: for tests of the machinery."""
    return make_config(steps=4, snapshots=2, d_model=16, n_heads=2, n_ctx=24, vocab_size=300, batch_size=4,
                       bpe_bytes=60_000, max_bytes=120_000)


def eval_tokens(cfg: CodeConfig, n: int = 128, seed: int = 99, corpus: Corpus | None = None) -> Int[Tensor, "n pos"]:
    """Windows of the held-out files (never trained on), one context long."""
    corpus = corpus or load(cfg.corpus)
    return corpus.windows(n, cfg.n_ctx, (cfg.data_seed, 10**6, seed), split="held_out")


def train_spec(cfg: CodeConfig) -> training.TrainSpec:
    corpus = load(cfg.corpus)
    corpus.windows(1, cfg.n_ctx, 0)  # a ValueError here if the context does not fit the corpus
    held_out = eval_tokens(cfg, 64, corpus=corpus)

    def batch(step: int) -> Tensor:
        return corpus.windows(cfg.batch_size, cfg.n_ctx, (cfg.data_seed, step))

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        return {"eval_loss": float(induction.per_token_loss(model, held_out).mean())}

    return training.TrainSpec(
        build=lambda seed: transformer.LM(cfg.arch, seed),
        batch=batch,
        loss=lambda model, tokens: induction.per_token_loss(model, tokens).mean(),
        tokens=lambda tokens: int(tokens.numel()),
        evaluate=evaluate,
    )


@functools.lru_cache(maxsize=4)
def _tokenizer_json(cfg: CorpusConfig, cache_root: str) -> str:
    """The verified tokenizer of a corpus, read once per process (a chapter builds a bridge for
    every snapshot)."""
    return tokenizer(cfg).backend_tokenizer.to_str()


def hooked(state_dict: dict[str, Tensor], cfg: CodeConfig, name: str = "attn-only-2l-code"):
    """The trained weights as a hooked TransformerBridge whose `.tokenizer` is the corpus's BPE."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(_tokenizer_json(cfg.corpus, str(settings.cache_dir())))
    return transformer.lm_bridge(state_dict, cfg.arch, wrap_tokenizer(backend), name)


def example_input(model: Any) -> Tensor:
    """A line of Python as the model reads it (after `<|endoftext|>`), cut to its context."""
    ids = model.tokenizer("def add(a, b):\n    return a + b\n")["input_ids"]
    return torch.tensor([ids[: model.cfg.n_ctx]])


def fused(state_dict: dict[str, Tensor], cfg: CodeConfig) -> transformer.LM:
    """The plain module holding a checkpoint's weights (fast, unhooked evaluation)."""
    return transformer.LM.from_state(state_dict, cfg.arch)


FAMILIES = (
    Family(
        name="attn-only-2l-code", description=DESCRIPTION, version=VERSION, config=config,
        tiny_config=tiny_config, train_spec=train_spec, hooked=hooked, fused=fused,
        example_input=example_input,
    ),
)
