"""README.md is a front door and docs/ holds the rest (issue 25, item 5): every relative link of README.md,
docs/*.md and deploy/*/README.md resolves, and every `autolfads` command their bash blocks show is one the
command line accepts (options renamed or removed show up here). Commands with placeholders (`...`, `[OPTIONAL]`,
IMAGE) are left out; docs/data.md's commands also run (tests/test_docs_data.py)."""

import re
from pathlib import Path

import pytest

from markdown_commands import bash_commands, parse_error

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "deploy").glob("*/README.md"))]
PLACEHOLDER = re.compile(r"\.\.\.|\[|^[A-Z][A-Z_-]*$|^IMAGE")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    missing = [link for link in links if "://" not in link and not (page.parent / link).exists()]
    assert not missing, missing


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_shown_commands_parse(page):
    commands = [argv for argv in bash_commands(page.read_text()) if not any(PLACEHOLDER.search(w) for w in argv)]
    bad = {" ".join(argv): error for argv in commands if (error := parse_error(argv))}
    assert not bad, bad


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 130
    assert "make demo" in readme and "make test" in readme
    for workflow in ("On this machine", "In a container", "On a Ray cluster", "On a SLURM cluster", "On Kubernetes"):
        assert f"**{workflow}**" in readme, workflow
    linked = set(re.findall(r"\]\((docs/[^)]+\.md)\)", readme))
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked  # every topic page is reachable
