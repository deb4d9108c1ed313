"""The documentation: README.md is the front door (short, every link works) and docs/ builds
into a MkDocs site with ``mkdocs build --strict`` (a broken link, a missing page or an unknown
anchor fails the build), as ``make docs`` does."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MKDOCS = Path(sys.executable).parent / "mkdocs"
README_MAX_LINES = 300
#: inline links and images ``[text](target)`` and ``![alt](target)``; reference links are not used
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _nav_pages(nav) -> list:
    """Every Markdown page named in mkdocs.yml's ``nav``."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return pages


def _outside_fences(text: str) -> str:
    """The Markdown outside fenced code blocks (links in code are not links)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return "\n".join(kept)


def _readme_links() -> list:
    return LINK.findall(_outside_fences(README.read_text(encoding="utf-8")))


def _config() -> dict:
    # mkdocs.yml uses no custom tags; safe_load refuses any that would sneak in
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
        capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(out)})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_site_builds_strictly_with_every_page_of_the_nav(site):
    pages = _nav_pages(_config()["nav"])
    assert len(pages) >= 15 and len(set(pages)) == len(pages)
    for page in pages:
        assert (ROOT / "docs" / page).is_file(), f"mkdocs.yml names a missing page: {page}"
        built = site / ("index.html" if page == "index.md" else page[:-3] + "/index.html")
        assert built.is_file(), f"{page} was not built"
    # every page of docs/ is reachable from the nav (MkDocs builds the others silently)
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == set(pages)


def test_the_registry_page_is_built_with_every_item_kind(site):
    html = (site / "registry" / "index.html").read_text(encoding="utf-8")
    for key in ("channel#", "rate#client-event#", "presence#", "member#", "roster", "cache#",
                "fanout#", "#occupancy#", "audience-index", "expires_at"):
        assert key in html, key


def test_each_benchmark_table_is_dated_and_says_where_it_was_measured():
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) >= 5
    for section in sections:
        title = section.splitlines()[0]
        if "|---" not in section:
            continue
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", section.split("|---")[0]), \
            f"benchmark section {title!r} has no date above its first table"
        assert "2-core VM" in section.split("|---")[0], \
            f"benchmark section {title!r} does not name the machine above its first table"


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """--strict really guards the links: the same site with one bad link does not build."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for page in (ROOT / "docs").rglob("*"):
        target = docs / page.relative_to(ROOT / "docs")
        if page.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(page.read_bytes())
    (docs / "registry.md").write_text(
        (docs / "registry.md").read_text(encoding="utf-8")
        + "\nSee [the missing page](no-such-page.md).\n", encoding="utf-8")
    (tmp_path / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text(encoding="utf-8"),
                                         encoding="utf-8")
    result = subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=tmp_path,
        capture_output=True, text=True, timeout=240,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "no-such-page.md" in result.stdout + result.stderr


def test_the_readme_is_at_most_300_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_every_relative_link_in_the_readme_points_at_an_existing_file():
    links = _readme_links()
    relative = [link for link in links if not urlsplit(link).scheme and not link.startswith("#")]
    assert len(relative) >= 10, relative  # the front door links into the docs
    for link in relative:
        path = unquote(urlsplit(link).path)
        assert (ROOT / path).is_file(), f"README.md links to a missing file: {link}"


def test_the_readme_shows_the_committed_demo_page_screenshot():
    assert "docs/img/demo-page.png" in _readme_links()
    png = (ROOT / "docs" / "img" / "demo-page.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
