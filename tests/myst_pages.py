"""The front matter that makes a Markdown file a MyST notebook, and the tiny book's `_config.yml`,
for the tests that build pages."""

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

# A tiny book's _config.yml: cached execution, any failing cell fails the build, the package's extension.
CONFIG = """\
title: tiny
only_build_toc_files: true
execute:
  execute_notebooks: cache
  raise_on_error: true
  stderr_output: remove
sphinx:
  extra_extensions: [optim_hunter.book.sphinx_ext]
"""
