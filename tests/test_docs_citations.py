"""Every "§" citation in projects/, tools/ and configs/ resolves inside the repository: it names a
document of docs/ and a section that document has (e.g. ``docs/specification.md §2.6``)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ('projects', 'tools', 'configs')
SUFFIXES = {'.py', '.sh', '.md', '.yml', '.yaml', '.txt', '.cu', '.cpp', '.h'}
SECTION = r'\d+(?:\.\d+)*'
CITATION = re.compile(rf'§\s*({SECTION})(?:\s*[-–]\s*({SECTION}))?')
DOCUMENT = re.compile(r'([\w./-]+\.md)\b')
HEADING = re.compile(rf'^#+\s+({SECTION})\.?\s')


def sections(doc: Path) -> set:
    """The section numbers of a markdown document's headings (``## 2.`` -> '2', ``### 2.6`` ->
    '2.6')."""
    return {m.group(1) for line in doc.read_text(encoding='utf-8').splitlines()
            if (m := HEADING.match(line))}


def resolve(name: str) -> Path | None:
    """A document named in a citation, if it is inside the repository's docs/."""
    for candidate in (ROOT / name, ROOT / 'docs' / Path(name).name):
        if candidate.is_file() and candidate.resolve().parent == (ROOT / 'docs').resolve():
            return candidate
    return None


def citations():
    """(file, line number, line, document name or None, [sections]) of every citation."""
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob('*')):
            if path.suffix not in SUFFIXES or not path.is_file() or '.venv' in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            for no, line in enumerate(path.read_text(encoding='utf-8', errors='replace')
                                      .splitlines(), 1):
                for m in CITATION.finditer(line):
                    # the document is the last one named before the § on the same line
                    # ("docs/specification.md §2.9, §3.6, §5")
                    docs = DOCUMENT.findall(line[:m.start()])
                    yield rel, no, line.strip(), docs[-1] if docs else None, [
                        g for g in m.groups() if g]


def test_sections_of_the_documents():
    spec = sections(ROOT / 'docs' / 'specification.md')
    assert {'2', '2.2', '2.6', '2.11', '3.3', '5', '7'} <= spec
    assert sections(ROOT / 'docs' / 'data_contract.md') >= {'1', '2', '3', '4'}


def test_every_section_citation_resolves_in_docs():
    found, bad = 0, []
    for rel, no, line, name, nums in citations():
        found += 1
        doc = resolve(name) if name else None
        if doc is None:
            bad.append(f'{rel}:{no}: no document of docs/ named before § ({line})')
            continue
        have = sections(doc)
        missing = [n for n in nums if n not in have]
        if missing:
            bad.append(f'{rel}:{no}: {name} has no section '
                       f'{", ".join(missing)} ({line})')
    assert found > 20  # the scan sees the citations
    assert not bad, '\n'.join(bad)


@pytest.mark.parametrize('line,ok', [
    ('see docs/specification.md §2.6', True),
    ('(docs/specification.md §3.3-3.4, §5, scripts)', True),
    ('see docs/specification.md §2.99', False),
    ('see odin_reference.md §2.6', False),
    ('see reference §2.6', False),
])
def test_the_rule_catches_bad_citations(tmp_path, line, ok):
    spec = sections(ROOT / 'docs' / 'specification.md')
    for m in CITATION.finditer(line):
        docs = DOCUMENT.findall(line[:m.start()])
        doc = resolve(docs[-1]) if docs else None
        good = doc is not None and all(g in spec for g in m.groups() if g)
        assert good == ok, line
