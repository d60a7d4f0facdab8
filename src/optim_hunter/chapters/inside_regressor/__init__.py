"""Inside the language model's regression answer: attribution, attention, MLPs, probes.
"""

from optim_hunter.chapters import Chapter

# It reads the competence map the competence chapter computed and cached, so it starts after it (reading
# it before would compute it again, under a lock). 90 s on the map's chosen setting (410 s on Friedman #2
# at 19 examples).
CHAPTER = Chapter("inside_regressor", language_model=True, after=("competence",), estimate=90.0)
