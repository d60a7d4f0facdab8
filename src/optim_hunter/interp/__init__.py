"""Analyses written against hook names and weights."""
