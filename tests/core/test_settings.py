"""Profiles and model names: defaults, validation, budgets."""

import pytest

from optim_hunter import zoo
from optim_hunter.core import settings


def test_defaults(monkeypatch):
    monkeypatch.delenv("OPTIM_HUNTER_PROFILE", raising=False)
    monkeypatch.delenv("OPTIM_HUNTER_MODEL", raising=False)
    assert settings.profile() == "full"
    assert zoo.model_name() == "smollm2-135m"


def test_environment_is_read(monkeypatch):
    monkeypatch.setenv("OPTIM_HUNTER_PROFILE", "Smoke")
    monkeypatch.setenv("OPTIM_HUNTER_MODEL", "hf:gpt2")
    assert settings.profile() == "smoke"
    assert zoo.model_name() == "hf:gpt2"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'fast'.*full, smoke"):
        settings.profile("fast")


def test_empty_model_is_a_clear_error():
    with pytest.raises(ValueError, match="empty model name"):
        zoo.model_name("  ")


def test_pick_chooses_by_profile():
    assert settings.pick("full", full=100, smoke=5) == 100
    assert settings.pick("smoke", full=100, smoke=5) == 5
    with pytest.raises(ValueError):
        settings.pick("medium", full=1, smoke=2)


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path))
    assert settings.cache_dir() == tmp_path


def test_slug_is_filesystem_safe():
    assert settings.slug("smoke__hf:meta-llama/Llama-3.1-8B") == "smoke__hf_meta-llama_Llama-3.1-8B"


def test_a_relative_cache_path_is_refused_with_the_absolute_one(monkeypatch):
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", "rel/cache")
    with pytest.raises(ValueError, match="relative path; give an absolute one, e.g. /.*/rel/cache"):
        settings.cache_dir()


def test_device_and_dtype_default_to_the_cpu_in_float32_on_a_cpu_machine(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("OPTIM_HUNTER_DEVICE", "OPTIM_HUNTER_DTYPE", "OPTIM_HUNTER_DEVICE_MAP", "OPTIM_HUNTER_N_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    assert settings.run_context() == {"device": "cpu", "dtype": "float32"}
    monkeypatch.setenv("OPTIM_HUNTER_DTYPE", "bfloat16")
    assert settings.run_context() == {"device": "cpu", "dtype": "bfloat16"}
    monkeypatch.setenv("OPTIM_HUNTER_DEVICE", "cuda")
    with pytest.raises(ValueError, match="OPTIM_HUNTER_DEVICE='cuda' asks for a CUDA GPU"):
        settings.run_context()


def test_the_front_page_settings_come_from_the_package(monkeypatch):
    from optim_hunter.book import sphinx_ext
    from optim_hunter.core import settings

    page = sphinx_ext.render_settings()
    assert f"default {settings.DEFAULT_MODEL}" in page and "OPTIM_HUNTER_CONTRASTS" in page
    monkeypatch.setattr(settings, "DEFAULT_MODEL", "hf:some/other-model")
    assert "default hf:some/other-model" in sphinx_ext.render_settings()  # a new default shows


def test_the_readme_lists_every_setting():
    from pathlib import Path

    from optim_hunter.core import settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for names, _, _ in settings.variables():
        for name in names.split(", "):
            assert f"`{name}`" in readme, f"README does not document {name}"
    assert f"`{settings.DEFAULT_MODEL}` (default)" in readme
