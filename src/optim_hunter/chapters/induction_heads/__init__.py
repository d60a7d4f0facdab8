"""Induction heads and the phase change (seed 003), in trained toys and a pretrained model.
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter(
    "induction_heads",
    loads=("attn-only-1l", "attn-only-2l", "attn-only-3l", "smeared-1l", "smeared-2l", "attn-only-2l-code"),
    estimate=350.0,  # three training seeds of the Markov models (195 s with one)
)
