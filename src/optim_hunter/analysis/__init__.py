"""Analyses: a model (by hook names and weights) and tensors in, result objects out.

Head scores, activation patching, attribution, ablation, probes, the residual decomposition,
OV/QK circuits, linear self-attention, scikit-learn regressors and a language model as one,
key/value-cached decoding. Never imports the zoo, the claims or a chapter: any model works.
"""
