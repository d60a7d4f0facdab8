"""optim_hunter: how transformers learn in context, as an executable book and the package behind it.

Modules (each file's docstring says more):

  settings       profile (full / smoke budgets), default model name, cache directory
  datasets       regression tasks (Friedman #1-#3, linear families) split into in-context examples
  prompts        the (features -> output) text format and a number parser with explicit failures
  positions      which token of a numeric prompt is a feature value, an output, a separator
  regressors     the scikit-learn baselines registry
  evaluation     fit-predict over seeds, metrics with bootstrap intervals, ranks
  regression_benchmark  the 004 benchmark as result objects: baselines, LLM comparison, curves

  transformer    the one model core: architecture, the one fused forward (training, evaluation,
                 KV-cached decoding), smeared keys, vector read-in, the one bridge construction
  training       the one trainer: configs, seeds, snapshots, atomic verified checkpoints, resume
  zoo/           named models. zoo.registry: the typed Family record (owns cache paths, snapshots,
                 locks); numeric, induction, code_corpus, affine: the trained families;
                 pretrained: SmolLM2-135M shipped in a package; hf: any Hugging Face causal LM
  yardstick      held-out in-context performance of any hooked model (numeric-icl's check)
  zoo_report     the models chapter's views of the zoo
  llm_regressor  any causal LM as a scikit-learn-style regressor (batched greedy decoding)
  kv_decoding    exact key/value-cached decoding for native and HF models (no hooks attached)
  hooks          the hook vocabulary: hook-name helpers, residual stages and labels, HookedModel
  dims           the one vocabulary of dimension names in shape annotations

  interp/        analyses written against hook names and weights, each returning result objects:
                 attribution, ablation, patching, probes, heads, circuits, decomposition (one
                 fused pass over an HF model's residual writers), regression (inside the LLM
                 regressor), linear_fn (y = 2x + 3), icl and pretrained_induction (induction
                 heads), lsa and lsa_experiments (gradient descent in linear self-attention),
                 affine, affine_heads, affine_interventions (affine recurrences)

  claims         claims declared beside the code that measures them; rows recorded in notebooks
  claim_rows     Recording: where a result's claim rows belong (chapter, profile, model)
  chapter        glue a result's numbers into a chapter's prose
  plots          every figure helper, rendered so the static book works offline
  sphinx_ext     the Jupyter Book extension: offline JS assets, claims collection, Claims page
  numbered_outputs  numbered, captioned figures and tables from code cells; the book's stylesheet
  cli            optim-hunter datasets | regressors | eval | train | models
"""

__version__ = "0.1.0"
