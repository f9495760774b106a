"""The product's docs: a short README that is a door, links that lead somewhere, and text that
speaks of the product (no issue numbers, no trials, no sessions of work)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PRODUCT_DOCS = [README, *DOCS, REPO / "bench" / "README.md"]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_the_readme_is_a_door_of_at_most_300_lines() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_readmes_first_two_commands_are_make_demo_and_make_test() -> None:
    """CI and users run them as the README shows them."""
    first_block = re.search(r"^```\n(.*?)^```", README.read_text(), re.S | re.M)
    assert first_block is not None
    commands = [line.split("#", 1)[0].strip() for line in first_block.group(1).splitlines()]
    assert commands[:2] == ["make demo", "make test"], commands


def test_the_readme_links_every_doc() -> None:
    linked = {(README.parent / t.split("#", 1)[0]).resolve() for t in relative_links(README)}
    missing = [str(d.relative_to(REPO)) for d in DOCS if d.resolve() not in linked]
    assert not missing, f"README.md links none of {missing}"


@pytest.mark.parametrize("doc", PRODUCT_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no such heading in {path.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: {broken}"


ISSUE_REFERENCE = re.compile(r"\bissues? #?\d+|(?<![\w/&])#\d+\b", re.I)
NOT_PRODUCT_LANGUAGE = ("new-user trial", "this session", "the session before", "lab-notes")


@pytest.mark.parametrize("doc", PRODUCT_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_product_docs_speak_of_the_product(doc: Path) -> None:
    text = doc.read_text()
    found = [m.group(0) for m in ISSUE_REFERENCE.finditer(text)]
    found += [phrase for phrase in NOT_PRODUCT_LANGUAGE if phrase in text.lower()]
    assert not found, f"{doc.relative_to(REPO)}: {found}"


def test_the_checks_catch_what_they_are_for() -> None:
    """The patterns above find what they are meant to, so the tests cannot pass by accident."""
    assert ISSUE_REFERENCE.search("see issue 11") and ISSUE_REFERENCE.search("(#13)")
    assert not ISSUE_REFERENCE.search("https://github.com/pulumi/pulumi/issues/16175")
    assert not ISSUE_REFERENCE.search("[x](a.md#the-lab)")
    assert relative_links(README), "no relative link found in README.md"
    assert slug("`bench_nat.py`: a NAT-model network, Pulumi's floor") == (
        "bench_natpy-a-nat-model-network-pulumis-floor"
    )
