"""The front matter that makes a Markdown file a MyST notebook, for the tests that build pages."""

HEADER = """\
---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  display_name: Python 3
  name: python3
---
"""
