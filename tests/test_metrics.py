"""qelm.metrics: metrics.jsonl is read back exactly, a torn last line is skipped, a bad line is named,
and a training run folder's models are found."""

import pytest

from qelm.metrics import read_metrics, read_runs, write_metrics


def test_read_runs_finds_the_qelm_and_twin_checkpoints(tmp_path, write_run):
    run = write_run(tmp_path / "run")
    runs = read_runs([run])
    assert list(runs) == [(run / "qelm").as_posix(), (run / "twin").as_posix()]
    matched = write_run(tmp_path / "three", (("qelm", 1.0), ("twin", 0.7), ("matched", 0.8)))
    assert list(read_runs([matched])) == [(matched / n).as_posix() for n in ("qelm", "twin", "matched")]
    assert [r["step"] for r in runs[(run / "qelm").as_posix()]] == list(range(0, 41, 5))
    assert list(read_runs([run / "twin"])) == [(run / "twin").as_posix()]  # a checkpoint folder itself


@pytest.mark.parametrize("content, message", [
    ('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": \n{"step": 3, "loss": 1.0}\n', r"metrics.jsonl:2 is not valid JSON"),
    ('{"loss": 2.0}\n', r"metrics.jsonl:1 has no 'step' key"),
])
def test_read_metrics_names_the_bad_line(tmp_path, content, message):
    (tmp_path / "metrics.jsonl").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_metrics(tmp_path / "metrics.jsonl")


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    """A run killed mid-write leaves half a line at the end; the records before it still plot."""
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]


def test_read_runs_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder .*nope.* does not exist"):
        read_runs([tmp_path / "nope"])
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl in .* or its qelm/, twin/ and matched/ subfolders"):
        read_runs([tmp_path])


def test_write_then_read_gives_the_records_back(tmp_path):
    records = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25, "val_loss": 2.4, "val_perplexity": 11.0}]
    write_metrics(tmp_path / "metrics.jsonl", records)
    assert read_metrics(tmp_path / "metrics.jsonl") == records
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "missing.jsonl")
