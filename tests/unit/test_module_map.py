"""docs/design.md's module map names every module of appjail/ and desktop/, and only those.

A map that omits a module, or names one that moved, misleads the next reader; this
test keeps it true whenever a module is added, moved or removed.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs" / "design.md"
PACKAGES = ("appjail", "desktop")
HEADING = re.compile(r"^## (?:\d+\. )?Module map\s*$")
ENTRY = re.compile(r"^\* `([^`]+\.py)` — \S")


def mapped_paths(text: str) -> list[str]:
    """The paths of the module map's entries: `* `PATH` — its job` lines of its section."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if HEADING.match(line)]
    assert len(starts) == 1, f"{DESIGN.name} needs exactly one '## N. Module map' section, found {len(starts)}"
    paths = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("## "):
            break
        match = ENTRY.match(line)
        if match:
            paths.append(match.group(1))
    return paths


def tree_paths() -> set[str]:
    return {path.relative_to(ROOT).as_posix()
            for package in PACKAGES for path in (ROOT / package).rglob("*.py")
            if "__pycache__" not in path.parts}


def test_the_map_parses_entries_of_the_documented_form():
    text = "## 11. Module map\n\n* `a/b.py` — its job\n* not an entry\n## 12. Next\n* `c.py` — later\n"
    assert mapped_paths(text) == ["a/b.py"]


def test_module_map_matches_the_tree():
    listed = mapped_paths(DESIGN.read_text(encoding="utf-8"))
    repeated = sorted({path for path in listed if listed.count(path) > 1})
    missing = sorted(tree_paths() - set(listed))
    extra = sorted(set(listed) - tree_paths())
    problems = []
    if missing:
        problems.append("modules in the tree but not in the map (add a line '* `PATH` — its job'):\n  "
                        + "\n  ".join(missing))
    if extra:
        problems.append("paths in the map that are not in the tree (moved or removed?):\n  " + "\n  ".join(extra))
    if repeated:
        problems.append("paths listed more than once:\n  " + "\n  ".join(repeated))
    assert not problems, "docs/design.md's module map is out of date:\n" + "\n".join(problems)
