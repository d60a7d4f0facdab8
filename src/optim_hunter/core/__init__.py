"""The model core and what everything else stands on: the transformer, the trainer and its checkpoints,
hook names, dimension names, devices, precision, safe file writing and run-time settings.

Imports nothing else of optim_hunter.
"""
