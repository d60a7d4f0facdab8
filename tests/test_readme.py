"""The README's notebook quickstart runs as printed: its code block is read from README.md (the two
cannot drift apart) and executed in a Jupyter kernel, on a tiny random Llama saved offline (its
`MODEL` line pointed at the folder) and, as written, on the model the package ships.

The figure the kernel shows is checked against prefix matching computed by hand from the Hugging
Face model's own (eager) attention weights: an independent reference for the bridge, the hooks and
`heads.prefix_matching`."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from optim_hunter.analysis import heads

ROOT = Path(__file__).resolve().parents[1]
HEADING = "### Use the helpers in your notebook"
MODEL_LINE = re.compile(r'^MODEL = "[^"\n]*"$', re.M)
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def quickstart() -> str:
    """The first python block under the README's quickstart heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert HEADING in readme, f"README.md has no section {HEADING!r}"
    blocks = re.findall(r"^```python\n(.*?)^```$", readme.split(HEADING, 1)[1], re.S | re.M)
    assert blocks, "the quickstart section has no python block"
    return blocks[0]


def with_model(code: str, model: str) -> str:
    """`code` with its one `MODEL = "..."` line naming `model`."""
    changed, n = MODEL_LINE.subn(f'MODEL = "{model}"', code)
    assert n == 1, "the quickstart must have exactly one line `MODEL = \"...\"`, the one a reader changes"
    return changed


def run_in_kernel(code: str, cwd: Path) -> list[dict]:
    """The outputs of `code` run as one notebook cell in a fresh python3 kernel."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return notebook.cells[0].outputs


def figure_z(outputs: list[dict]) -> np.ndarray:
    """The z values of the one heat map the cell showed (plotly's JSON, base64 arrays decoded)."""
    figures = [o["data"][PLOTLY_MIME] for o in outputs if PLOTLY_MIME in o.get("data", {})]
    assert len(figures) == 1, f"expected one figure, got {[o.get('data', o).keys() for o in outputs]}"
    (trace,) = figures[0]["data"]
    assert trace["type"] == "heatmap"
    z = trace["z"]
    if isinstance(z, dict):  # plotly >= 6 writes numpy arrays as {"dtype", "bdata", "shape"}
        shape = [int(n) for n in str(z["shape"]).split(",")]
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, dtype=float)


def printed(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


@pytest.fixture
def kernel_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OPTIM_HUNTER_BOOK", raising=False)  # a notebook, not a book build
    monkeypatch.setenv("OPTIM_HUNTER_CACHE", str(tmp_path / "cache"))
    return tmp_path


def reference_prefix_matching(folder: Path, *, length: int = 25, repeats: int = 4, batch: int = 10) -> np.ndarray:
    """Prefix matching [layer, head] from the HF model's eager attention weights: per row, the mean
    over queries in the repeats of the attention on each position that follows an earlier
    occurrence of the query's token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    bos = AutoTokenizer.from_pretrained(folder).bos_token_id
    tokens = heads.repeated_random_tokens(model.config.vocab_size, length=length, repeats=repeats,
                                          batch=batch, bos=bos)
    with torch.no_grad():
        attentions = model(tokens, output_attentions=True).attentions  # per layer [batch, head, q, k]
    first = length + 1  # BOS and the first copy: no earlier occurrence to match
    score = np.zeros((len(attentions), attentions[0].shape[1]))
    for l, pattern in enumerate(attentions):
        for b, row in enumerate(tokens.tolist()):
            for q in range(first, len(row)):
                after = [j + 1 for j in range(q) if row[j] == row[q]]
                score[l] += pattern[b, :, q, after].sum(-1).numpy()
    return score / (batch * (len(tokens[0]) - first))


def test_the_quickstart_runs_on_a_tiny_model_and_shows_its_prefix_matching(kernel_env, tiny_hf_models, monkeypatch):
    monkeypatch.setenv("OPTIM_HUNTER_DEVICE", "cpu")  # float32: compared with a float32 reference
    folder = tiny_hf_models["llama"]
    outputs = run_in_kernel(with_model(quickstart(), f"hf:{folder}"), kernel_env)
    expected = reference_prefix_matching(folder)
    np.testing.assert_allclose(figure_z(outputs), expected, atol=1e-5)
    layer, head = np.unravel_index(expected.argmax(), expected.shape)
    assert f"L{layer}H{head}, score {expected.max():.2f}" in printed(outputs)


def test_with_model_changes_the_model_line_only():
    code = quickstart()
    changed = with_model(code, "hf:/tmp/x")
    assert 'MODEL = "hf:/tmp/x"' in changed
    assert [a for a, b in zip(code.splitlines(), changed.splitlines()) if a != b] == ['MODEL = "smollm2-135m"']


@pytest.mark.slow
def test_the_quickstart_runs_as_written_on_the_shipped_model(kernel_env):
    """SmolLM2-135M (30 layers, 9 heads) from its wheel, dequantized into an empty cache; a trained
    language model has induction heads, so its best prefix-matching score is far above chance."""
    outputs = run_in_kernel(quickstart(), kernel_env)
    z = figure_z(outputs)
    assert z.shape == (30, 9) and np.isfinite(z).all() and ((z >= 0) & (z <= 1)).all()
    assert z.max() > 0.3, f"no head matches prefixes (best {z.max():.3f})"
    assert "strongest induction candidate: L" in printed(outputs)
