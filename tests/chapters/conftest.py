"""Fixtures of the affine-recurrence analysis tests: small random models from `affine_tiny`, built
once per test module."""

import pytest
from affine_tiny import study, two_layer


@pytest.fixture(scope="module")
def setup():
    """(cfg, native, hooked model, held-out groups) of a random 2-layer, 2-head affine model."""
    return two_layer()


@pytest.fixture(scope="module")
def tiny_study():
    """A `Study` of a random 3-layer, 8-head affine model."""
    return study()
