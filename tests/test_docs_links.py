"""Every relative link of the README, docs/, reference/contract.md and the committed result tables points at
a file of the repository, and every #anchor at a heading of its page, so moving a page or renaming a section
cannot leave a dangling link behind."""
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "reference" / "contract.md", *(ROOT / "docs").glob("*.md"),
                *(ROOT / "benchmarks" / "results").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def relative_links(page: Path):
    """(file part, anchor part) of every link that is not a web address."""
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        yield path, anchor


@functools.lru_cache(maxsize=None)  # a page is linked to many times
def anchors(page: Path) -> set[str]:
    """The #anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens,
    repeats numbered."""
    seen, out, fenced = {}, set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing, bad_anchor = [], []
    for path, anchor in relative_links(page):
        target = (page.parent / path) if path else page
        if not target.exists():
            missing.append(path)
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            bad_anchor.append(f"{path}#{anchor}")
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"
    assert not bad_anchor, f"{page.relative_to(ROOT)} links to headings that do not exist: {bad_anchor}"


def test_anchors_follow_githubs_rule(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A step per group at `g = 128`\n```\n# not a heading\n```\n## The contract's split, re-checked\n"
                    "## Notes\n## Notes\n")
    assert anchors(page) == {"a-step-per-group-at-g--128", "the-contracts-split-re-checked", "notes", "notes-1"}


def test_the_link_pattern_sees_links():
    assert list(relative_links(ROOT / "README.md")), "the README has relative links; the pattern must find them"
