"""No URL credential appears in anything qelm prints or writes: a storage URL's password is shown as ***
in announcements, errors, logs and reports."""

import pytest

from qelm.redact import redact

SECRET = "secretpw"
URL = f"postgresql://u:{SECRET}@127.0.0.1:1/db"
SPACE = "[sweep]\ntrials = 1\nseeds = [0]\n[train]\nsteps = 1\n[search.model]\nfeed_forward = ['quantum']\n"


@pytest.mark.parametrize("text, shown", [
    (URL, "postgresql://u:***@127.0.0.1:1/db"),
    ("in 'mysql+pymysql://a:p@ss@h/d' now", "in 'mysql+pymysql://a:***@h/d' now"),
    ("sqlite:////tmp/sweep.db", "sqlite:////tmp/sweep.db"),
    ("postgresql://u@host/db and redis://:pw@h:6379/0", "postgresql://u@host/db and redis://:***@h:6379/0"),
    ("runs/sweep", "runs/sweep"),
])
def test_redact_hides_every_password(text, shown):
    assert redact(text) == shown == redact(redact(text))


@pytest.mark.parametrize("mode", [(), ("--resume",), ("--report",)])
def test_no_sweep_output_holds_the_storage_password(tmp_path, corpus, capfd, mode):
    """Everything the command writes to stdout and stderr, its libraries' logs too: the password is in no
    line of it."""
    pytest.importorskip("optuna")
    import qelm.cli

    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    given = ("--space", str(space), "--data", str(corpus)) if not mode else ()
    rc = qelm.cli.main(["sweep", *given, *mode, "--out", str(tmp_path / "s"), "--storage", URL])
    out, err = capfd.readouterr()
    assert rc == 2 and "u:***@127.0.0.1" in err, err
    assert SECRET not in out + err
    assert len(err.strip().splitlines()) == 1, "one line, no SQL dump"


def test_the_sweep_announcement_hides_the_password(cli, tmp_path, corpus, monkeypatch):
    """The line a working storage gets (the database is faked: its sweep starts, then stops)."""
    pytest.importorskip("optuna")
    import qelm.cli.sweep
    from qelm.errors import ConfigError

    def fake_run_sweep(*args, started=None, **kwargs):
        started()
        raise ConfigError(f"the sweep storage {kwargs['storage']!r} stopped")

    monkeypatch.setattr(qelm.cli.sweep, "run_sweep", fake_run_sweep)
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    rc, out, err = cli("sweep", "--space", space, "--data", corpus, "--out", tmp_path / "s", "--storage", URL)
    assert rc == 2 and "starting the sweep in postgresql://u:***@127.0.0.1:1/db" in out
    assert SECRET not in out + err and "u:***@" in err
