"""Every Python block of README.md and docs/guide.md runs, so the docs cannot drift from the code.

The blocks of one ``## `` section run in order in one namespace (a later block may use what an
earlier one built). Budgets are shortened by the substitutions below; each must still match
the page (a test fails if the docs change under it), and nothing else is changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

#: (page, section title) -> [(text in the docs, what the test runs instead)]
SHORTER = {
    ("README.md", "Compose the losses in your own TorchRL loop"): [
        ("total_frames=8 * 50 * 100", "total_frames=8 * 50 * 2"),
        ('num_demos=10', 'num_demos=3'),
    ],
    ("docs/guide.md", "A custom TorchRL pipeline"): [
        ("total_frames=200 * 8 * 50", "total_frames=2 * 8 * 50"),
        ("num_demos=10", "num_demos=3"),
        ("for _ in range(5):", "for _ in range(1):"),
        ("for iteration in range(200):", "for iteration in range(1):"),
        ("num_episodes=128", "num_episodes=4"),
    ],
    ("docs/guide.md", "Any env"): [("total_frames=4 * 25 * 8", "total_frames=4 * 25 * 3")],
}
#: sections whose blocks need a Ray head (the session's test cluster)
NEEDS_RAY = {("docs/guide.md", "A custom TorchRL pipeline")}


def sections(page: str) -> dict[str, list[str]]:
    """Python blocks of ``page`` by ``## `` section (text before the first: the page's title)."""
    out: dict[str, list[str]] = {}
    parts = re.split(r"^## (.+)$", (ROOT / page).read_text(), flags=re.M)
    titled = [("(top)", parts[0])] + list(zip(parts[1::2], parts[2::2]))
    for title, body in titled:
        blocks = FENCE.findall(body)
        if blocks:
            out[title.strip()] = blocks
    return out


CASES = [(page, title) for page in ("README.md", "docs/guide.md") for title in sections(page)]


def test_every_section_with_code_is_covered_and_every_shortening_matches():
    assert set(SHORTER) <= set(CASES), set(SHORTER) - set(CASES)
    for (page, title), subs in SHORTER.items():
        code = "\n".join(sections(page)[title])
        for old, _ in subs:
            assert old in code, f"{page} / {title}: {old!r} is no longer in the docs; update SHORTER"


@pytest.mark.slow
@pytest.mark.parametrize("page,title", CASES, ids=[f"{p}:{t}" for p, t in CASES])
def test_docs_code_runs(page, title, request, tmp_path, monkeypatch):
    if (page, title) in NEEDS_RAY:
        request.getfixturevalue("ray_connected")
    monkeypatch.chdir(tmp_path)  # whatever a block writes lands in a temporary directory
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(sections(page)[title]):
        for old, new in SHORTER.get((page, title), []):
            block = block.replace(old, new)
        exec(compile(block, f"{page}:{title}:block{i}", "exec"), namespace)
