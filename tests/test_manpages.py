"""Man pages: generated from the click commands and the parser's keyword table, committed
under man/, installed by the package, rendered by man -l without a warning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vtcore import manpages
from vtcore.config import keywords as kw

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"
PAGES = sorted([*MAN.glob("man1/*.1"), *MAN.glob("man5/*.5")])
_DATE = re.compile(r'^(\.TH "[^"]*" "\d" )"[^"]*"', re.M)

# Every command of the core CLI (no plugin's) with its option spellings, from a fresh
# process: a test that ran build_cli() earlier has plugin commands in vtcore.cli.cli.
COMMANDS = r"""
import json, click
from vtcore.cli import cli
def walk(cmd, path):
    yield " ".join(path), [o for p in cmd.params if isinstance(p, click.Option) for o in p.opts]
    for name, sub in getattr(cmd, "commands", {}).items():
        if not sub.hidden:  # vt worker: started by the master only, no page
            yield from walk(sub, [*path, name])
print(json.dumps(dict(walk(cli, ["vt"]))))
"""


def _render(page: Path) -> str:
    man = shutil.which("man")
    if man is None:
        pytest.fail("man missing: scripts/setup-system installs man-db and groff-base")
    res = subprocess.run([man, "--warnings", "-l", str(page)], capture_output=True, text=True,
                         timeout=30, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin",
                                          "LC_ALL": "C.UTF-8"})
    assert res.returncode == 0 and not res.stderr.strip(), f"{page.name}: {res.stderr}"
    return res.stdout


def test_committed_pages_are_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "vtcore.manpages", str(tmp_path)], check=True,
                   capture_output=True, timeout=60)
    fresh = sorted([*tmp_path.glob("man1/*.1"), *tmp_path.glob("man5/*.5")])
    assert [p.relative_to(tmp_path) for p in fresh] == [p.relative_to(MAN) for p in PAGES]
    for new, old in zip(fresh, PAGES, strict=True):
        assert _DATE.sub(r"\1", new.read_text()) == _DATE.sub(r"\1", old.read_text()), (
            f"{old} is stale: run python -m vtcore.manpages man")


def test_every_command_has_a_page_showing_each_of_its_options() -> None:
    out = subprocess.run([sys.executable, "-c", COMMANDS], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    commands = json.loads(out)
    assert {"vt", "vt serve", "vt run", "vt status", "vt config check"} <= commands.keys()
    for path, options in commands.items():
        text = _render(MAN / "man1" / f"{path.replace(' ', '-')}.1")
        for opt in options:
            assert re.search(rf"(^|[\s,]){re.escape(opt)}\b", text, re.M), (path, opt)


def test_vt_conf_documents_every_keyword_the_parser_accepts() -> None:
    text = _render(MAN / "man5" / "vt.conf.5")
    for word in kw.OPTIONS | kw.HOST | kw.BINDADDR | kw.SRCADDR | kw.COMMANDS | kw.ALIASES.keys():
        assert re.search(rf"^\s+{word}\b", text, re.M) or f" {word} " in text, word


def test_an_undocumented_keyword_stops_the_generation(monkeypatch) -> None:
    heading, table, docs = manpages.KEYWORD_DOCS["options"]
    monkeypatch.setitem(manpages.KEYWORD_DOCS, "options", (heading, table | {"newword"}, docs))
    with pytest.raises(manpages.KeywordDocsError, match="undocumented \\['newword'\\]"):
        manpages.vt_conf_page("2026-01-01")


def test_the_package_installs_the_pages() -> None:
    """scripts/dev-install (and a wheel) put them under <prefix>/share/man."""
    for page in PAGES:
        installed = Path(sys.prefix) / "share" / "man" / page.relative_to(MAN)
        assert installed.is_file(), f"{installed} missing: re-run scripts/dev-install"
        assert installed.read_text() == page.read_text(), f"{installed} is stale"
        _render(installed)
