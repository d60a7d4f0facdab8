"""What a chapter reports: claims and how their verdicts are decided, claim rows, figures, and
the numbers glued into the prose.
"""
