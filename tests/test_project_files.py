"""The project's own files a user or an indexer reads: LICENSE, CITATION.cff (Citation File Format 1.2.0) and the
user-facing extras of pyproject.toml (issue 25, item 4)."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOI = re.compile(r"10\.\d{4,9}/\S+")


def test_license_is_the_mit_text_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert text.startswith("MIT License\n\nCopyright (c) 2026 autolfads developers\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_citation_cff_parses_and_has_the_required_keys():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):  # what CFF 1.2.0 requires
        assert cff.get(key), key
    assert cff["type"] == "software" and cff["license"] == "MIT"
    assert str(cff["version"]) == PYPROJECT["project"]["version"]
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    references = {ref["doi"]: ref for ref in cff["references"]}
    assert set(references) == {"10.1038/s41592-022-01675-0", "10.1038/s41592-018-0109-9"}  # AutoLFADS, LFADS
    for doi, ref in references.items():
        assert DOI.fullmatch(doi) and ref["type"] == "article" and ref["journal"] == "Nature Methods"
        assert ref["title"] and all({"family-names", "given-names"} <= set(a) for a in ref["authors"])
    assert references["10.1038/s41592-022-01675-0"]["authors"][0]["family-names"] == "Keshtkaran"
    assert references["10.1038/s41592-018-0109-9"]["authors"][0]["family-names"] == "Pandarinath"
    assert (references["10.1038/s41592-022-01675-0"]["year"], references["10.1038/s41592-018-0109-9"]["year"]) == (
        2022,
        2018,
    )


def test_user_extras_hold_no_developer_tools():
    extras = PYPROJECT["project"]["optional-dependencies"]
    developer = ("ruff", "pytest")
    for name, requirements in extras.items():
        if name != "dev":
            assert not [r for r in requirements if r.split("=")[0].split(">")[0] in developer], name
    assert any(r.startswith("ruff") for r in extras["dev"])
