"""The dimension names of the package's shape annotations: one name per meaning.

Every jaxtyping annotation (`Float[Tensor, "batch pos d_model"]`, `Int[np.ndarray, "n"]`) uses
only these names (and literal sizes, `...`, `*` variadics), so a reader meets one vocabulary across
the model, the analyses and the plots; the attention names follow TransformerLens. Under pytest
the annotations are checked at run time (jaxtyping with beartype, `--jaxtyping-packages` in
pyproject.toml; beartype's PEP 484 numeric tower is on, so an int passes where a float is
annotated, as static checkers allow), and tests/test_dims.py checks that no other name appears.
A `_` before a name (`"stage _pos"`) keeps the name but leaves its size unchecked: a subset of
the positions, say, whose count need not match another argument's `pos`.
"""

from __future__ import annotations

DIMS: dict[str, str] = {
    # sequences and the model
    "batch": "sequences (prompts, chains, windows) run together",
    "pos": "positions of a sequence",
    "pos_1": "positions but the last: the next-token predictions of a sequence",
    "query_pos": "attention's query (destination) positions",
    "key_pos": "attention's key (source) positions, cached ones included",
    "source_pos": "positions of a patch's source run, end-aligned with the target run's pos",
    "layer": "transformer blocks",
    "head": "attention heads of a block",
    "d_model": "the residual stream",
    "d_head": "one head's query, key and value space",
    "d_mlp": "MLP neurons",
    "d_vocab": "the vocabulary, or the width of a vector model's read-in and read-out",
    # what analyses index by
    "stage": "residual-stream stages (hooks.resid_stages)",
    "component": "writers to the residual stream (embedding, heads, MLPs) in an attribution",
    "snapshot": "kept training snapshots",
    "span": "the token spans of one prompt's numbers",
    "grid": "points of a parameter grid",
    "index": "in-context token index (the loss-against-log-index curves)",
    # data
    "n": "independent items: problems, samples, seeds, prompts",
    "unit": "the units a bootstrap resamples (held-out chains, sequences, prompts, heads)",
    "quantity": "several statistics measured on the same bootstrap units",
    "draw": "random draws of an intervention (e.g. one random matrix per draw)",
    "example": "in-context examples of a prompt",
    "query": "query points of a regression problem, predicted from its n in-context examples",
    "feature": "input features of a regression problem or a probe",
    "term": "terms a_0 .. a_L of an affine recurrence",
    "d_vector": "the width of one affine-recurrence term (the model reads it as d_vocab)",
    "integers": "the signed-integer number tokens of the numeric tokenizer",
    "row": "rows of a matrix or table",
    "col": "columns of a matrix or table",
}


def names_in(shape: str) -> list[str]:
    """The dimension names of a jaxtyping shape string (literal sizes, `...`, `_`, and the `*`, `#`
    and `_` prefixes set aside; `a+b` expressions split into their names)."""
    names = []
    for part in shape.split():
        part = part.lstrip("*#_")
        if "=" in part:  # "name=size"
            part = part.split("=")[0]
        for word in part.replace("+", " ").replace("-", " ").split():
            if word and word != "..." and not word.isdigit():
                names.append(word)
    return names
