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
  training     the one trainer: configs, seeds, snapshots, atomic safetensors checkpoints, resume
  zoo/         named models: load("smollm2-135m") (pretrained, shipped in a package: zoo.pretrained),
               load("numeric-icl"), the Markov-chain attention-only models, the affine-recurrence
               model, and load("hf:<name-or-path>") for Hugging Face models (zoo.hf: with a fused
               twin for hook-free passes, and device placement)
  llm_regressor  any causal LM as a scikit-learn-style regressor (batched greedy decoding)
  kv_decoding  exact key/value-cached decoding for native and HF models (when no hooks are attached)
  positions    which token of a numeric prompt is a feature value, an output, a separator
  hooks        the hook vocabulary: hook-name helpers, residual stages and labels, HookedModel
  interp/      analyses written against hook names (optim_hunter.hooks) and weights: lsa (gradient descent in linear
               self-attention), attribution, ablation, patching, probes, heads, circuits,
               regression, linear_fn (y = 2x + 3), icl (induction heads), affine, decomposition
               (one fused pass: the residual stream's writers at the last position of an HF model),
               pretrained_induction (induction heads in the pretrained model)
  cli          optim-hunter datasets | regressors | eval | train | models
"""

__version__ = "0.1.0"
