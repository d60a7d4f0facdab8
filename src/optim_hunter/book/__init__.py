"""The book's machinery: the executor (trains, then executes chapters), the per-chapter cache keys,
the Sphinx extension, numbered outputs, the Performance page and the command line.
"""
