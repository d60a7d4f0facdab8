"""Where the language model learns in context: a competence map against controls.
"""

from optim_hunter.chapters import Chapter

CHAPTER = Chapter("competence", language_model=True, estimate=300.0)
