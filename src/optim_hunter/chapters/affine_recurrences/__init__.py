"""Affine recurrences (seed 001): the model, its heads, and interventions on them.
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter(
    "affine_recurrences",
    loads=("affine-recurrence", "affine-every-position"),
    estimate=170.0,  # five training seeds (100 s with three, 69 s with two, 45 s with one)
)
