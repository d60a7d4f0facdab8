r"""The tokenizer of the numeric in-context learner: a signed integer part is one token.

Built with the `tokenizers` library and wrapped in `transformers.PreTrainedTokenizerFast`, so the
code that drives a Hugging Face model (`tokenizer(text)`, `.decode`, `.convert_ids_to_tokens`,
padding) drives ours unchanged. `tokenizer(text)` prepends `<bos>`, as Llama's does.

How text is cut (one regex pre-tokenizer, first match wins, then a word-level vocabulary):

  * the integer part of a number, with its sign, is one token from `-1999` to `1999` (`-0` is the
    integer part of -0.37). Larger integer parts are written in chunks of three digits aligned
    from the right, as thousands separators are, the first chunk again up to 1999
    (`12345` -> `12` `345`, `1234567` -> `1234` `567`). Every number the book's tasks write has
    its whole signed integer part in one token (Friedman #2's inputs and outputs stay below 1800);
  * the fractional part is one token of up to two digits (`.49`, `.5`), so a number written with
    the prompts' default 2 decimals costs two tokens (`-1436` `.49`); further decimals continue as
    integer chunks (`.493` -> `.49` `3`);
  * labels are single tokens with the newline(s) before them (`\n\nFeature 0: `, `\nOutput:`);
    an answer is ` ` then the number, so a prompt ending in `Output:` is a prefix of the training
    text. "(x, y)" lines use `(` / `\n(`, `, ` and `)`. Any other printable ASCII character is a
    token of its own; other characters are `<unk>`.

Why not digits, or Llama-3's three-digit chunks with a separate minus: answers are read greedily,
and a greedy decoder picks the single most likely next token. When the candidate tokens stand for
value ranges of different widths, the wide one wins whenever the model is unsure: a separate `-`
gathers all the probability of a negative answer and outbids every magnitude (measured: the sign
token won on most prompts of a model whose magnitudes were already right), and with three-digit
chunks the `1` of `1|436` covers 1000-1999 and outbids every 3-digit answer on Friedman #2
(answers 0-1760). Integer parts up to 1999 rather than 9999 keep the vocabulary (and the
unembedding, computed at every answer token) five times smaller. With the signed integer part as one token, the first number token's argmax is a
mode of the model's belief about the value, and a value's sign and size are one thing to copy or
compare in attention. Digits would also avoid the problem but double the length of prompts (a
25-example Friedman #2 prompt is ~430 tokens here); on two CPU cores attention cost grows with the
square of the length.
"""

from __future__ import annotations

import functools
import re

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
MAX_FEATURE_LABEL = 31  # "Feature 0: " ... "Feature 31: " are words; larger ones are spelled out
N_INTEGERS = 2000  # "0" ... "1999" (and "-0" ... "-1999") are single tokens

PATTERN = (
    r"(?:\n\n|\n)?Feature (?:3[01]|[12]\d|\d): "  # a label (0-31) and the newline(s) before it
    r"|\n?Output:"
    r"|\n?\("
    r"|, "
    r"|\.\d{1,2}"  # the fractional part (first two decimals)
    r"|-?(?:1\d{3}|\d{1,3})(?=(?:\d{3})*(?!\d))"  # integer chunks from the right; the first signed
    r"|.|\n"  # anything else: one character
)

# "-1999" ... "-1", "-0", "0", "1", ... "1999" get consecutive ids from FIRST_INTEGER_ID on, so
# neighbours in value are neighbours in id (see `integer_token_id`, `integer_slice`).
FIRST_INTEGER_ID = len(SPECIALS)


def _signed_integers() -> list[str]:
    return [f"-{v}" for v in range(N_INTEGERS - 1, -1, -1)] + [str(v) for v in range(N_INTEGERS)]


def _vocabulary() -> list[str]:
    words: list[str] = list(SPECIALS) + _signed_integers()
    # chunks with leading zeros: continuations ("045" of "12045") and odd spellings ("07")
    for width in (2, 3):
        words += [f"{v:0{width}d}" for v in range(10 ** (width - 1))]
    words += [f".{v:02d}" for v in range(100)] + [f".{v}" for v in range(10)]
    for newlines in ("", "\n", "\n\n"):
        words += [f"{newlines}Feature {index}: " for index in range(MAX_FEATURE_LABEL + 1)]
    words += ["Output:", "\nOutput:", "(", "\n(", ", ", ")"]
    words += [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    return list(dict.fromkeys(words))  # single characters such as "0" or "(" are already words


VOCAB: tuple[str, ...] = tuple(_vocabulary())
VOCAB_SIZE = len(VOCAB)


@functools.lru_cache(maxsize=1)
def vocab_index() -> dict[str, int]:
    return {word: i for i, word in enumerate(VOCAB)}


def integer_token_id(value: int, negative: bool = False) -> int:
    """The id of the integer-part token of `value` (-1999..1999); `negative` picks `-0` for 0."""
    if not -N_INTEGERS < value < N_INTEGERS:
        raise ValueError(f"a single integer token holds -{N_INTEGERS - 1}..{N_INTEGERS - 1}, got {value}")
    zero = FIRST_INTEGER_ID + N_INTEGERS  # the id of "0"; "-0" is just before it
    return zero + value if value > 0 or (value == 0 and not negative) else zero + value - 1


def integer_slice() -> slice:
    """The ids of "-1999" ... "1999", in value order (`-0` sits between `-1` and `0`)."""
    return slice(FIRST_INTEGER_ID, FIRST_INTEGER_ID + 2 * N_INTEGERS)


@functools.lru_cache(maxsize=1)
def _backend() -> Tokenizer:
    vocab = vocab_index()
    tok = Tokenizer(models.WordLevel(vocab=dict(vocab), unk_token=UNK))
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


_NUMBER_PIECE = re.compile(r"^(?:-?\d{1,4}|\.\d{1,2})$")  # integer parts and chunks, fractions


def is_number_piece(token: str) -> bool:
    """True for integer parts and chunks and fractional parts (`-1436`, `045`, `.41`, `.5`)."""
    return bool(_NUMBER_PIECE.match(token))
