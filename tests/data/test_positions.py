"""Token roles of numeric prompts, checked character by character on a char-level tokenizer."""

import numpy as np

from optim_hunter.data import positions, prompts


def test_roles_on_characters(chars):
    text = prompts.format_prompt(np.array([[1.5, 20.0], [3.25, 4.0]]), np.array([7.0, 8.5]),
                                 np.array([5.0, 6.0]))
    layout = positions.token_roles(chars, text)
    assert len(layout.roles) == len(text)
    decoded = lambda idx: "".join(text[i] for i in idx)  # noqa: E731  (char tokenizer: pos == char)
    assert decoded(layout.where("output_value")) == "7.008.50"
    assert decoded(layout.where("feature_value", example=0)) == "1.5020.00"
    assert decoded(layout.where("feature_value", example=2)) == "5.006.00"
    assert layout.n_examples == 3
    assert set(layout.feature[layout.where("feature_value")]) == {0, 1}
    assert all(text[i] == "\n" for i in layout.where("separator"))
    # The final "Output:" belongs to the query (example 2).
    assert layout.example[-1] == 2 and layout.roles[-1] == "label"


def test_prefix_decoding_fallback(chars):
    class NoOffsets:
        def __call__(self, text, **kwargs):
            if kwargs.get("return_offsets_mapping"):
                raise NotImplementedError
            return chars(text)

        def decode(self, ids, **kwargs):
            return chars.decode(ids, **kwargs)

    text = prompts.format_prompt(np.array([[1.0]]), np.array([2.0]), np.array([3.0]))
    a = positions.token_roles(chars, text)
    b = positions.token_roles(NoOffsets(), text)
    assert a.roles == b.roles
