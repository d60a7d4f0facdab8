"""The Performance page's tables from a `make bench` report."""

from __future__ import annotations

import json

from optim_hunter.book import bench_page


def test_no_report_says_how_to_make_one(tmp_path):
    assert "run <code>make bench</code>" in bench_page.render(tmp_path / "bench.json")


def test_goals_training_side_by_side_and_costs(tmp_path):
    report = {"started": "now", "machine": "x86_64", "cpus": 2, "profile": "smoke",
              "max_page_mb": 0.4, "batched_eval_speedup": 3.0, "side_by_side_speedup": 1.3,
              "goals": {"max_page_mb": {"goal": "<= 3", "met": True},
                        "batched_eval_speedup": {"goal": ">= 10", "met": False}}}
    (tmp_path / "bench.json").write_text(json.dumps(report))
    page = bench_page.render(tmp_path / "bench.json")
    assert "max_page_mb" in page and "goal-met" in page and "goal-missed" in page
    assert "side_by_side_speedup" in page and "profile <code>smoke</code>" in page
    assert "Where the cold build" not in page and "bare loop" not in page and "bfloat16" not in page
    report["batched_eval_detail"] = {"prompts": 8, "bf16_speedup": 1.5, "bf16_identical_answer_share": 0.375}

    report["train_throughput"] = [{"name": "attn-only-1l", "precision": "fp32", "trainer_tokens_per_s": 9000.0,
                                   "bare_tokens_per_s": 10000.0, "ratio": 0.9, "flops_per_token": 2.5e6, "mfu": 0.125}]
    report["matmul_flops_one_thread"] = {"fp32": 1.8e11}
    report["cold_build_s"] = 200.0
    report["lanes"] = 2
    report["costs"] = [{"part": "install (venv + pip)", "seconds": 20.0, "lane": None, "start": 0.0},
                       {"part": "train numeric-icl", "seconds": 150.0, "lane": 0, "start": 20.0},
                       {"part": "execute book/a", "seconds": 100.0, "lane": 1, "start": 20.0}]
    (tmp_path / "bench.json").write_text(json.dumps(report))
    page = bench_page.render(tmp_path / "bench.json")
    assert "<td><code>attn-only-1l</code></td><td>fp32</td><td>9,000</td><td>10,000</td><td>0.900</td><td>2.50</td><td>0.125</td>" in page
    assert "fp32: 180 GFLOP/s" in page
    # lanes overlap: the shares of the build add to more than 100%, and the page says so
    assert "<td>train numeric-icl</td><td>1</td><td>20</td><td>150</td><td>75%</td>" in page
    assert "<td>execute book/a</td><td>2</td><td>20</td><td>100</td><td>50%</td>" in page
    assert "on 2 lanes side by side" in page
    assert "1.50× faster" in page and "only 38% of its answers" in page


def test_the_page_says_which_precision_each_cached_model_trained_in_and_why(tmp_path, monkeypatch):
    from optim_hunter import zoo
    from optim_hunter.book import bench_page
    from optim_hunter.core import precision

    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path))
    assert "No trained model" in bench_page.precisions("smoke")
    final = zoo.family("attn-only-1l").final_path("smoke").with_suffix(".json")
    final.parent.mkdir(parents=True)
    final.write_text(json.dumps({"meta": {"config": {"train": {"precision": "fp32"}}}}))
    monkeypatch.setattr(precision, "fast_bf16_cpu", lambda: False)
    page = bench_page.precisions("smoke")
    assert "attn-only-1l" in page and "fp32" in page and "not fast on this machine" in page
    assert "attn-only-2l" not in page  # not trained: not listed
    monkeypatch.setenv("OPTIM_HUNTER_DTYPE", "bfloat16")
    assert "forced by OPTIM_HUNTER_DTYPE=bf16" in bench_page.precisions("smoke")


def test_bf16_on_the_competence_map_is_reported_with_the_verdicts_it_changed():
    report = {"bf16_competence": {"answers": 800, "cells": 25, "bf16_identical_answer_share": 0.9,
                                  "bf16_identical_by_task": {"copy": 1.0, "friedman2": 0.55},
                                  "verdict_changes": ["add_c_n8_plain_random"]}}
    text = bench_page.decoding(report)
    assert "800 prompts" in text and "90%" in text and "copy 100%" in text and "friedman2 55%" in text
    assert "add_c_n8_plain_random" in text
    report["bf16_competence"]["verdict_changes"] = []
    assert "changed: none" in bench_page.decoding(report)
    assert bench_page.decoding({}) == ""


def test_each_language_model_chapter_is_shown_against_its_compute_floor(tmp_path):
    report = {"started": "now", "machine": "x86_64", "cpus": 2, "profile": "full",
              "llm_chapters": {"matmul_flops": 1.0e11, "threads": 1, "ratio": 1.6,
                               "chapters": {"book/llm_regressor": {"seconds": 600.0, "flops": 4.0e13, "passes": 1234,
                                                                   "floor_s": 400.0}}}}
    (tmp_path / "bench.json").write_text(json.dumps(report))
    page = bench_page.render(tmp_path / "bench.json")
    assert "at 100 GFLOP/s" in page and "lane's 1 thread(s)" in page
    assert "<td><code>book/llm_regressor</code></td><td>600</td><td>1,234</td><td>40.0</td><td>400</td><td>1.50</td>" in page
    del report["llm_chapters"]
    (tmp_path / "bench.json").write_text(json.dumps(report))
    assert "compute floor" not in bench_page.render(tmp_path / "bench.json")
