"""optim_hunter: how transformers learn in context, as an executable book and the package behind it.

Modules:
  settings     profile (full / smoke budgets), default model name, cache directory
  datasets     regression tasks (Friedman #1-#3, linear families) split into in-context examples
  prompts      the (features -> output) text format and a number parser with explicit failures
  regressors   the scikit-learn baselines registry
  evaluation   fit-predict over seeds, metrics with bootstrap intervals, ranks
  claims       measurements recorded beside the source studies' values
  plots        every figure helper, rendered so the static book works offline
  sphinx_ext   the Jupyter Book extension: offline JS assets, claims collection, the Claims page
"""

__version__ = "0.1.0"
