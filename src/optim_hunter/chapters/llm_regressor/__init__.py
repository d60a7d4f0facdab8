"""The language model as an in-context regressor (seed 004): its comparison with the baselines
(`regression_benchmark`), the shuffled-y and mean-baseline controls (`llm_controls`), and the
tables and figures both benchmark chapters draw (`benchmark_tables`).
"""

from optim_hunter.chapters import Chapter

# with shuffled-y controls: extrapolated from 4.2 s per 25-example prompt
CHAPTER = Chapter("llm_regressor", language_model=True, estimate=670.0)
