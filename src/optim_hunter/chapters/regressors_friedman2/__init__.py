"""Classical regressors on Friedman #2 (seed 004): the baselines and the values the source
publishes (`baselines`); the language model's side is the next chapter's (`chapters.llm_regressor`).
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter("regressors_friedman2", estimate=95.0)
