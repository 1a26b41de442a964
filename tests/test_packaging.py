"""What a release ships (read from ``pyproject.toml`` and the files it names, without building): an SPDX
licence and its file, authors, classifiers, keywords, project URLs, ``py.typed``, a package-index page that
needs no repository beside it, an sdist without the repository's tests, and the other ``qelm`` named."""

import re
import tomllib
from pathlib import Path

import qelm
import qelm.version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_licence_is_an_spdx_expression_and_its_file_ships():
    project = PROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # PEP 639: the expression alone


def test_the_metadata_a_package_index_shows():
    project = PROJECT["project"]
    assert project["name"] == qelm.DISTRIBUTION
    assert project["authors"] and project["keywords"] and "Typing :: Typed" in project["classifiers"]
    assert set(project["urls"]) >= {"Homepage", "Source", "Issues", "Changelog"}
    assert all(url.startswith("https://") for url in project["urls"].values())
    assert project["urls"]["Homepage"] == qelm.version.URL  # the model cards name it too
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["qelm"]
    assert (ROOT / "qelm" / "py.typed").is_file()


def test_the_long_description_links_only_absolute_addresses():
    """The package index shows ``readme`` alone: a relative link or image there points nowhere."""
    text = (ROOT / PROJECT["project"]["readme"]).read_text(encoding="utf-8")
    relative = [target for target in re.findall(r"\]\(([^)\s]+)", text) if not target.startswith(("https://", "#"))]
    assert not relative, f"relative links in the package index's page: {relative}"
    assert "pip install qelm-lab" in text and "`pip install qelm`" in text


def test_the_readme_says_how_to_install_before_a_release_and_names_the_other_qelm():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e ." in text and "python -m build --wheel" in text
    assert "Do not `pip install\nqelm`" in text or "Do not `pip install qelm`" in text


def test_the_sdist_ships_no_tests_and_the_changelog_names_this_version():
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8")
    assert "prune tests" in manifest and "LICENSE" in manifest
    assert re.search(rf"^## \[[^]]*\].*{re.escape(qelm.__version__)}", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"),
                     re.MULTILINE)
