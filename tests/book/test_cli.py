"""The command line as a user meets it: `train` offers only what it trains, and every command
survives a reader that closed the pipe (`optim-hunter models | head -n 0`)."""

import subprocess
import sys
from pathlib import Path

import pytest

from optim_hunter import zoo
from optim_hunter.book import cli

EXE = Path(sys.executable).parent / "optim-hunter"


@pytest.mark.parametrize("name, message", [
    ("no-such-model", "unknown model 'no-such-model': the models the package trains are"),
    ("smollm2-135m", "is pretrained (shipped in a package): it is loaded, not trained; a chapter uses it with"),
    ("hf:someone/model", "is a Hugging Face model: it is loaded, not trained (from a local copy)"),
])
def test_train_lists_only_the_models_it_can_train(name, message, capsys):
    assert cli.main(["train", name]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    offered = err.split("trains", 1)[1]
    assert all(model in offered for model in zoo.names())
    assert "hf:<name-or-path>" not in err and "smollm2-135m, " not in offered


@pytest.mark.parametrize("argv", [["datasets"], ["regressors"], ["models"], ["--help"], ["train", "--help"]])
def test_every_command_survives_a_closed_pipe(argv):
    # The reader is gone before a byte is written: the write fails with EPIPE, which must not show.
    read, write = __import__("os").pipe()
    __import__("os").close(read)
    result = subprocess.run([str(EXE), *argv], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    __import__("os").close(write)
    assert result.returncode in (0, 141), result.stderr
    assert result.stderr == "", result.stderr


def test_eval_takes_a_language_model_as_a_method_with_its_shuffled_control(tiny_hf_models, capsys):
    model = f"hf:{tiny_hf_models['llama']}"
    code = cli.main(["eval", "linear_1_1", "--methods", "average", "--model", model, "--shuffled", "--seeds", "3",
                     "--examples", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert any("average" in line for line in out.splitlines())
    assert sum(1 for line in out.splitlines() if "(shuffled y)" in line) == 1
    assert len(out.strip().splitlines()) == 4  # a header, then the baseline, the model and its control


def test_eval_refuses_an_unknown_model_before_any_work(capsys):
    assert cli.main(["eval", "friedman2", "--model", "no-such-model", "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--only", "linear_fm"], "no chapter named 'linear_fm': the book's chapters are model_zoo, "),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
])
def test_execute_refuses_an_unknown_chapter_or_model_before_any_work(argv, message, capsys, monkeypatch):
    from optim_hunter.book import book_executor

    monkeypatch.setattr(book_executor, "run", lambda *a, **k: pytest.fail("work started"))
    assert cli.main(["execute", "--root", str(Path(__file__).resolve().parents[2]), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_execute_only_hands_the_chapters_and_the_model_to_the_executor(monkeypatch, capsys):
    from optim_hunter.book import book_executor

    seen = {}
    monkeypatch.delenv("OPTIM_HUNTER_MODEL", raising=False)
    monkeypatch.setattr(book_executor, "run", lambda root, profile, **k: seen.update(
        k, model=__import__("os").environ.get("OPTIM_HUNTER_MODEL")) or [])
    root = str(Path(__file__).resolve().parents[2])
    assert cli.main(["execute", "--root", root, "--only", "linear_fn", "--model", "smollm2-135m", "--quiet"]) == 0
    assert seen["only"] == ["linear_fn"] and seen["model"] == "smollm2-135m"
    monkeypatch.delenv("OPTIM_HUNTER_MODEL", raising=False)
