"""Gradient descent inside linear self-attention (von Oswald et al. 2023).
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter("gd_in_attention", estimate=205.0)  # three training seeds: 202 s measured (one seed: 125 s)
