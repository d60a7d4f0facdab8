"""In-context learning of y = a x + b (seed 002).
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter("linear_fn", language_model=True, estimate=170.0)  # with the sweep's shuffled-y controls (extrapolated)
