"""optim_hunter: how transformers learn in context, as an executable book and the package behind it.

The package is in layers; each imports only from the layers below it (`pyproject.toml` declares
them for import-linter, and `make test` checks them):

  book/       the book's machinery: the executor (trains the models, then executes the chapters),
              each chapter's execution-cache key, the Sphinx extension, numbered outputs, the API
              and Performance pages, the `optim-hunter` command line
  chapters/   one package per chapter: `__init__.py` holds its `Chapter` record (the models it
              loads, whether it runs the language model, the chapters it reads, its time), its
              modules the studies (sections returning result objects), their claims and figures
  zoo/        every model by name: the `Family` registry and the trained families (numeric,
              induction, code_corpus, affine), the pretrained model shipped in a package, any
              Hugging Face causal LM (hf)
  report/     claims, how their verdicts are decided (verdicts, training_seeds), claim rows,
              every figure (plots), numbers glued into the prose (prose)
  analysis/   a model (by hook names and weights) and tensors in, result objects out, for any
              model: heads, patching, attribution, ablation, probes, decomposition, circuits,
              lsa, intervals, regressors and evaluation, the LLM as a regressor, KV decoding
  data/       regression tasks, the prompt format and the answer parser, token positions
  core/       the one model core (transformer), the one trainer (training), checkpoints, locks,
              safe file writing (diskspace), hook and dimension names, losses, devices,
              precision, the fast twin of a bridged model, run-time settings

zoo and report sit side by side and never import each other.
"""

__version__ = "0.1.0"
