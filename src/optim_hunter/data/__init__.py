"""Data a model is shown: regression tasks, their prompt text and answer parser, token positions.
"""
