"""The models chapter's views: a trainer's record and the held-out ICL check, from hand-made inputs."""

import types

import numpy as np
import pytest

from optim_hunter import zoo
from optim_hunter.analysis import yardstick
from optim_hunter.chapters.model_zoo import numeric_checks, zoo_report
from optim_hunter.data import datasets


def test_models_table_lists_every_name(monkeypatch):
    monkeypatch.setattr(zoo, "status", lambda name, profile: types.SimpleNamespace(state=f"{name}/{profile}"))
    table = zoo_report.models_table("smoke")
    assert list(table["name"]) == zoo.names() and table["status"].iloc[0] == f"{zoo.names()[0]}/smoke"


def test_training_run_views():
    meta = {"steps": 3, "train_seconds": 1.4, "tokens_per_second": 99.6, "losses": [4.0, 2.0, 0.0],
            "history": [{"step": 2, "linear_ratio": 0.5, "affine_top1": 0.1}]}
    run = zoo_report.TrainingRun("m", {"layers": 2}, meta)
    assert run.losses["smoothed"].tolist() == [4.0, 3.0, 2.0]  # running means
    assert run.summary.to_dict() == {"layers": 2, "steps": 3, "train seconds": 1, "tokens per second": 100}
    assert len(run.history_figure().data) == 2 and run.loss_figure().layout.yaxis.type == "log"


@pytest.fixture
def result():
    names = (*datasets.LINEAR_FAMILIES, "friedman2")
    mae = {d: {1: 10.0, 5: 4.0} for d in names}
    average = {d: {1: 12.0, 5: 12.0} for d in names}
    return yardstick.ICLResult(examples=(1, 5), mae=mae, average_mae=average, failures={d: {1: 1, 5: 0} for d in names},
                             n_problems=3, affine_examples=10, affine_top1=0.9, affine_failures=0, affine_prompts=20)


def test_icl_check_views_and_claims(result):
    check = zoo_report.ICLCheck(result, "smoke", "numeric-icl")
    assert check.curve.loc[5, "linear MAE"] == 4.0 and check.curve.loc[1, "friedman2 average MAE"] == 12.0
    assert check.table.loc[1, "failed friedman2"] == 1
    assert check.bars["met"].to_dict() == numeric_checks.bars(result) and check.bars["met"].all()
    rows = {r.id: r for r in check.claims()}
    assert rows["zoo.numeric.linear_vs_average"].measured == pytest.approx(4 / 12)
    assert rows["zoo.numeric.affine_top1"].verdict == "reproduced" and np.isclose(check.affine["top-1"], 0.9)
    assert len(check.figure().data) == 4
    assert check.sentence().startswith("On y = 2x + 3") and f"{len(check.bars)} of the {len(check.bars)} bars" in check.sentence()


def test_numeric_icl_is_in_the_build_only_when_a_contrast(monkeypatch):
    monkeypatch.delenv("OPTIM_HUNTER_CONTRASTS", raising=False)
    assert not zoo_report.in_build("numeric-icl")
    monkeypatch.setenv("OPTIM_HUNTER_CONTRASTS", "numeric-icl")
    assert zoo_report.in_build("numeric-icl")
    note = zoo_report.not_in_build("numeric-icl")
    assert "not trained in the default build" in note and "OPTIM_HUNTER_CONTRASTS=numeric-icl" in note
