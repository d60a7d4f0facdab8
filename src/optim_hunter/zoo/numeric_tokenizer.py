"""The tokenizer of the numeric in-context learner: numbers in place-value chunks, labels as words.

Built with the `tokenizers` library and wrapped in `transformers.PreTrainedTokenizerFast`, so the
code that drives a Hugging Face model (`tokenizer(text)`, `.decode`, `.convert_ids_to_tokens`,
padding) drives ours unchanged. `tokenizer(text)` prepends `<bos>`, as Llama's does.

How text is cut (one regex pre-tokenizer, first match wins, then a word-level vocabulary):

  * integers in chunks of up to three digits aligned from the right, as thousands separators are:
    `1436` -> `1` `436`, `1005` -> `1` `005`. Llama-3 chunks from the left (`143` `6`), which gives
    the same token a different place value in different numbers; aligned from the right, a chunk's
    place value is fixed by how many chunks follow, and every number below 1000 is one token.
  * the fractional part as one token of up to two digits (`.49`, `.5`), so a number written with
    the prompts' default 2 decimals costs two tokens (`336` `.41`), not the 3-7 of digit tokens.
    Further decimals continue as integer chunks (`.493` -> `.49` `3`).
  * the labels of the (features -> output) format as single tokens, with the newline(s) before
    them and, for features, the minus sign of the value after them (`\\n\\nFeature 0: `,
    `\\nFeature 1: -`, `\\nOutput:`); the answer itself is ` ` then (`-`) then the number, as in
    Llama-3, so a prompt that ends in `Output:` is a prefix of the text the model was trained on.
  * the "(x, y)" line format: `(`, `\\n(`, `, `, `)`; any other character is a token of its own,
    and characters outside printable ASCII become `<unk>`.

Why chunks and not digits: a Friedman #2 prompt with 25 examples is ~470 tokens this way and
~1000 with one token per digit; on two CPU cores the shorter sequence is what makes a model that
learns in context trainable in minutes (attention cost grows with the square of the length).
"""

from __future__ import annotations

import functools
import re

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
MAX_FEATURE_LABEL = 31  # "Feature 0: " ... "Feature 31: " are words; larger ones are spelled out

PATTERN = (
    r"(?:\n\n|\n)?Feature (?:3[01]|[12]\d|\d): -?"  # a label (0-31), its newline(s), the value's sign
    r"|\n?Output:"
    r"|\n?\("
    r"|, "
    r"|\)"
    r"|\.\d{1,2}"  # the fractional part (first two decimals)
    r"|\d{1,3}(?=(?:\d{3})*(?!\d))"  # integer chunks aligned from the right
    r"|.|\n"  # anything else: one character
)

# Ids are laid out so a chunk's value is its id minus a constant (convenient in analyses).
FIRST_INTEGER_ID = len(SPECIALS)


def _vocabulary() -> list[str]:
    words: list[str] = list(SPECIALS)
    words += [str(v) for v in range(1000)]  # leading chunks: "0" ... "999"
    words += [f"{v:03d}" for v in range(100)]  # continuation chunks with leading zeros: "000" ... "099"
    words += [f"{v:02d}" for v in range(10)]  # "00" ... "09" (never written by format_number)
    words += [f".{v:02d}" for v in range(100)] + [f".{v}" for v in range(10)]
    for newlines in ("", "\n", "\n\n"):
        for index in range(MAX_FEATURE_LABEL + 1):
            words += [f"{newlines}Feature {index}: ", f"{newlines}Feature {index}: -"]
    words += ["Output:", "\nOutput:", "(", "\n(", ", ", ")"]
    words += [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    seen: set[str] = set()
    unique = []
    for word in words:  # single characters such as "0" or "(" are already words
        if word not in seen:
            seen.add(word)
            unique.append(word)
    return unique


VOCAB: tuple[str, ...] = tuple(_vocabulary())
VOCAB_SIZE = len(VOCAB)


@functools.lru_cache(maxsize=1)
def vocab_index() -> dict[str, int]:
    return {word: i for i, word in enumerate(VOCAB)}


def integer_token_id(value: int) -> int:
    """The id of the leading chunk `str(value)` for 0 <= value <= 999."""
    if not 0 <= value <= 999:
        raise ValueError(f"a single integer token holds 0..999, got {value}")
    return FIRST_INTEGER_ID + value


@functools.lru_cache(maxsize=1)
def _backend() -> Tokenizer:
    vocab = {word: i for i, word in enumerate(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()  # tokens are literal text: decoding concatenates them
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok.add_special_tokens(list(SPECIALS))
    return tok


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh Hugging Face fast tokenizer (deterministic: the vocabulary is written in code)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_backend(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # " ," must stay " ,": tokens are literal text
        model_max_length=1_000_000,
        # TransformerLens reloads a tokenizer by name unless it declares that it adds BOS itself.
        add_bos_token=True,
        add_eos_token=False,
        name_or_path="optim_hunter/numeric-icl",
    )


_NUMBER_PIECE = re.compile(r"^(?:\d{1,3}|\.\d{1,2})$")


def is_number_piece(token: str) -> bool:
    """True for integer chunks and fractional parts (`436`, `005`, `.41`, `.5`)."""
    return bool(_NUMBER_PIECE.match(token))
