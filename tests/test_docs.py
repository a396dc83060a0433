"""The READMEs and docs/en, docs/zh: in step, navigable, and covering what a user runs.

No Redis needed. The documents are read as text; what is checked is what a
reader looks for:

- each key of ``config.SCHEMA`` written as `section.key` in the configuration
  page of both languages; each script a user runs, and the two commands of
  "Two commands", in both READMEs; CI runs the test command the README gives;
- the two languages in step: the same pages, the same heading levels in the
  same order, the same code blocks once comments are dropped, the same links
  once anchors and the language folder are set aside; comments inside the
  Chinese pages' code blocks are Chinese;
- every page opens with a table of contents matching its headings, every
  relative link reaches a file (and, with ``#anchor``, a heading of it), and
  each README links every docs page of its language;
- no placeholder comment but the markers generators fill in;
- every path and file name the documents give (`scripts/distnode/run/jobs.py`, `lua/elect.lua`,
  `spawn.py`) names a file of the checkout, and every test the bad-input table names exists,
  so a module or test that was moved or renamed cannot leave the docs pointing at nothing.

``python3 tests/test_docs.py --write-toc`` rewrites every page's table of
contents from its headings (run it after adding or renaming a heading).
"""

import os
import re
import sys
import unittest

from support.base import REPO as _ROOT, SCRIPTS as _SCRIPTS  # first: puts scripts/ on sys.path
from distnode.core import config

READMES = {"en": "README_EN.md", "zh": "README.md"}
DOCS = {"en": os.path.join("docs", "en"), "zh": os.path.join("docs", "zh")}
USER_SCRIPTS = ("heartbeat.py", "leader_election.py", "failover_manager.py", "state_sync.py",
                "node_manager.py", "task_queue.py")
# Scripts with a main() that users reach through start-node.sh, not by name.
INTERNAL_SCRIPTS = {"node_setup.py": "./start-node.sh"}
SETUP_COMMANDS = ("./start-node.sh demo", "tests/run.sh")
TOC_TITLE = {"en": "**Contents**", "zh": "**目录**"}
# Regions a generator rewrites (core/exits.py, the settings records): left out of the tables of contents.
GENERATED = ("exit-codes", "settings")
MARKERS = {"README.md": ("exit-codes",), "README_EN.md": ("exit-codes",),
           "configuration.md": ("settings",)}

_FENCE = re.compile(r"^(```|~~~)")
_HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")
_LINK = re.compile(r"\[(?:[^\]]|\][^(])*?\]\(([^)\s]+)\)")
_COMMENT = re.compile(r"(^|\s)#(?![!#\w{]).*$")
_CJK = re.compile(r"[\u4e00-\u9fff]")
# A path from the top of the checkout; a placeholder (`<id>`, `*`) ends it, and then its folder
# (`tests/bench/results/` of `tests/bench/results/<time>.json`) must exist.
_REPO_PATH = re.compile(r"(?<![\w/.~-])((?:scripts|tests|config|docs|\.ci)/[\w./-]*)([<*]?)")
# A path inside scripts/distnode/, as the code map writes them (`core/settings.py`).
_LIBRARY_PATH = re.compile(r"`((?:core|redis|lua|cluster|tasks|procs|run)/[\w./-]*)")
_FILE_NAME = re.compile(r"`([\w.-]+\.(?:py|lua|sh))\b")
# `test_module.Class.test_name`, or `Class.test_name` of tests/test_bad_input.py (its own table).
_TEST_NAME = re.compile(r"`((?:test_\w+\.)?[A-Z]\w*\.test_\w+)`")
# Paths a user makes from a shipped example; the checkout never holds them.
USER_MADE = ("config/secrets.json",)


def read(name: str) -> str:
    with open(os.path.join(_ROOT, name), encoding="utf-8") as f:
        return f.read()


def pages(lang: str) -> list:
    """The file names of docs/<lang>/, sorted."""
    return sorted(n for n in os.listdir(os.path.join(_ROOT, DOCS[lang])) if n.endswith(".md"))


def scripts_with_main() -> set:
    """Every scripts/*.py that defines main() and runs it when executed."""
    found = set()
    for name in os.listdir(_SCRIPTS):
        if name.endswith(".py"):
            with open(os.path.join(_SCRIPTS, name), encoding="utf-8") as f:
                text = f.read()
            if re.search(r"^def main\(", text, re.M) and re.search(r"^if __name__ == .__main__.:", text, re.M):
                found.add(name)
    return found


def missing_keys(text: str) -> list:
    """SCHEMA keys not written as `section.key` in ``text``."""
    return ["%s.%s" % key for key in config.SCHEMA if "`%s.%s`" % key not in text]


def prose_lines(text: str) -> list:
    """(line, in_generated_region) for each line outside code blocks."""
    out, fenced, generated = [], False, False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        marker = re.match(r"^<!-- ([\w-]+):(begin|end) -->$", line.strip())
        if marker and marker.group(1) in GENERATED:
            generated = marker.group(2) == "begin"
        out.append((line, generated))
    return out


def headings(text: str) -> list:
    """(level, title, anchor, generated) of every heading outside code blocks, anchors as GitHub makes them."""
    out, seen = [], {}
    for line, generated in prose_lines(text):
        m = _HEADING.match(line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
            n = seen.get(slug, -1) + 1
            seen[slug] = n
            out.append((len(m.group(1)), m.group(2), slug if n == 0 else "%s-%d" % (slug, n), generated))
    return out


def toc_for(text: str, lang: str) -> list:
    """The table of contents a page should open with: its ## and ### headings outside generated regions."""
    lines = [TOC_TITLE[lang], ""]
    for level, title, anchor, generated in headings(text):
        if level in (2, 3) and not generated:
            lines.append("%s- [%s](#%s)" % ("  " * (level - 2), title, anchor))
    return lines


def toc_found(text: str, lang: str) -> list:
    """The table of contents under the page's title: the title line, a blank line, the list (up to a blank line)."""
    lines = text.splitlines()
    if TOC_TITLE[lang] not in lines[:6]:
        return []
    start = lines.index(TOC_TITLE[lang])
    end = start + 2
    while end < len(lines) and lines[end].strip():
        end += 1
    return lines[start:end]


def write_toc(path: str, lang: str) -> None:
    """Put (or replace) the table of contents right under the page's title."""
    text = read(path)
    lines = text.splitlines()
    old = toc_found(text, lang)
    if old:
        start = lines.index(TOC_TITLE[lang])
        del lines[start:start + len(old) + 1]
    lines[1:1] = [""] + toc_for(text, lang)
    with open(os.path.join(_ROOT, path), "w", encoding="utf-8") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")


def code_blocks(text: str) -> list:
    """Each fenced code block as a list of lines."""
    blocks, current = [], None
    for line in text.splitlines():
        if _FENCE.match(line):
            if current is None:
                current = [line.strip()]
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def comments(block: list) -> list:
    """The text of each shell/Python comment in a code block."""
    return [m.group(0).strip() for m in (_COMMENT.search(line) for line in block[1:]) if m]


def without_comments(block: list) -> list:
    return [_COMMENT.sub("", line).rstrip() for line in block]


def links(text: str) -> list:
    """Every Markdown link target outside code blocks."""
    return [target for line, _ in prose_lines(text) for target in _LINK.findall(line)]


def neutral(target: str, lang: str) -> str:
    """A link target without its anchor and with the language taken out, to compare en with zh."""
    path = target.split("#", 1)[0]
    other = [name for code, name in READMES.items() if code != lang][0]
    if path.endswith(other):  # the language switch points at the other README
        return path[:-len(other)] + "README-OTHER"
    return path.replace("docs/%s/" % lang, "docs/LANG/").replace(READMES[lang], "README")


def broken_links(path: str, text: str = None) -> list:
    """Relative links of ``path`` (or of ``text`` read from there) whose file or heading does not exist."""
    broken = []
    for target in links(read(path) if text is None else text):
        if re.match(r"^[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(os.path.join(_ROOT, dest)):
            broken.append(target)
        elif anchor and dest.endswith(".md") and anchor not in [h[2] for h in headings(read(dest))]:
            broken.append(target)
    return broken


def checkout_file_names() -> set:
    """The name of every file of the checkout (git's and caches' folders left out)."""
    names = set()
    for folder, dirs, files in os.walk(_ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".cache")]
        names.update(files)
    return names


def unknown_paths(text: str, file_names: set) -> list:
    """Paths (from the top, or inside scripts/distnode/) and file names in ``text`` that name nothing."""
    unknown = []
    for match in _REPO_PATH.finditer(text):
        path = match.group(1).rstrip(".")
        if match.group(2):
            path = path[:path.rindex("/") + 1]
        if path not in USER_MADE and not os.path.exists(os.path.join(_ROOT, path)):
            unknown.append(path)
    for match in _LIBRARY_PATH.finditer(text):
        if not os.path.exists(os.path.join(_SCRIPTS, "distnode", match.group(1))):
            unknown.append(match.group(1))
    return unknown + [m.group(1) for m in _FILE_NAME.finditer(text) if m.group(1) not in file_names]


def test_defined(module: str, cls: str, method: str) -> bool:
    """Whether tests/<module>.py defines ``method`` in class ``cls``."""
    path = os.path.join(_ROOT, "tests", module + ".py")
    if not os.path.isfile(path):
        return False
    body = re.search(r"^class %s\b.*?(?=^class |\Z)" % re.escape(cls), read(os.path.join("tests", module + ".py")),
                     re.M | re.S)
    return bool(body) and re.search(r"^\s+def %s\(" % re.escape(method), body.group(0), re.M) is not None


def unknown_tests(text: str) -> list:
    """Tests named in ``text`` that do not exist."""
    unknown = []
    for match in _TEST_NAME.finditer(text):
        parts = match.group(1).split(".")
        module = parts[0] if len(parts) == 3 else "test_bad_input"
        if not test_defined(module, parts[-2], parts[-1]):
            unknown.append(match.group(1))
    return unknown


def all_documents() -> list:
    """(lang, path) of each README and docs page."""
    return [(lang, READMES[lang]) for lang in READMES] + \
        [(lang, os.path.join(DOCS[lang], name)) for lang in DOCS for name in pages(lang)]


def pairs() -> list:
    """(en path, zh path) of documents that must be in step."""
    return [(READMES["en"], READMES["zh"])] + \
        [(os.path.join(DOCS["en"], n), os.path.join(DOCS["zh"], n)) for n in pages("en")]


class ReadmeTest(unittest.TestCase):
    def setUp(self):
        self.readmes = {name: read(name) for name in READMES.values()}

    def test_every_user_facing_script_is_documented(self):
        for name, text in self.readmes.items():
            for script in USER_SCRIPTS:
                with self.subTest(readme=name, script=script):
                    self.assertIn(script, text)

    def test_scripts_with_a_main_are_known(self):
        # A new script with a main() must be documented: add it to USER_SCRIPTS (and the READMEs)
        # or, if start-node.sh runs it, to INTERNAL_SCRIPTS.
        self.assertEqual(scripts_with_main(), set(USER_SCRIPTS) | set(INTERNAL_SCRIPTS))

    def test_internal_scripts_are_reached_through_documented_commands(self):
        for name, text in self.readmes.items():
            for script, command in INTERNAL_SCRIPTS.items():
                with self.subTest(readme=name, script=script):
                    self.assertIn(command, text)

    def test_setup_commands(self):
        for name, text in self.readmes.items():
            for command in SETUP_COMMANDS:
                with self.subTest(readme=name, command=command):
                    self.assertIn(command, text)

    def test_language_links(self):
        self.assertIn("[English](README_EN.md)", "\n".join(self.readmes["README.md"].splitlines()[:5]))
        self.assertIn("[中文](README.md)", "\n".join(self.readmes["README_EN.md"].splitlines()[:5]))

    def test_readmes_link_every_docs_page_of_their_language(self):
        for lang, readme in READMES.items():
            linked = {neutral(t, lang) for t in links(self.readmes[readme])}
            for name in pages(lang):
                with self.subTest(readme=readme, page=name):
                    self.assertIn("docs/LANG/" + name, linked)

    def test_readmes_stay_short(self):
        for name, text in self.readmes.items():
            with self.subTest(readme=name):
                self.assertLess(len(text.splitlines()), 320, "the depth belongs in docs/")


class DocsTest(unittest.TestCase):
    def test_every_config_key_is_in_the_configuration_pages(self):
        for lang in DOCS:
            with self.subTest(lang=lang):
                text = read(os.path.join(DOCS[lang], "configuration.md"))
                self.assertEqual(missing_keys(text), [], "%s lacks these config keys" % lang)

    def test_the_check_notices_a_missing_key(self):
        text = read(os.path.join(DOCS["en"], "configuration.md"))
        self.assertEqual(missing_keys(text.replace("`tasks.reclaim_grace_s`", "`tasks.grace`")),
                         ["tasks.reclaim_grace_s"])

    def test_both_languages_have_the_same_pages(self):
        self.assertEqual(pages("en"), pages("zh"))
        self.assertGreaterEqual(len(pages("en")), 12)

    def test_same_heading_structure(self):
        for en, zh in pairs():
            with self.subTest(page=en):
                self.assertEqual([h[0] for h in headings(read(en))], [h[0] for h in headings(read(zh))])

    def test_same_code_blocks_but_for_comments(self):
        for en, zh in pairs():
            en_blocks, zh_blocks = code_blocks(read(en)), code_blocks(read(zh))
            with self.subTest(page=en):
                self.assertEqual(len(en_blocks), len(zh_blocks))
            for i, (a, b) in enumerate(zip(en_blocks, zh_blocks)):
                with self.subTest(page=en, block=i):
                    self.assertEqual(without_comments(a), without_comments(b))

    def test_chinese_code_comments_are_chinese(self):
        for en, zh in pairs():
            for i, block in enumerate(code_blocks(read(zh))):
                english = [c for c in comments(block) if not _CJK.search(c) and re.search(r"[A-Za-z]{3,} [A-Za-z]{3,}", c)]
                with self.subTest(page=zh, block=i):
                    self.assertEqual(english, [])

    def test_same_links(self):
        for en, zh in pairs():
            with self.subTest(page=en):
                self.assertEqual([neutral(t, "en") for t in links(read(en))],
                                 [neutral(t, "zh") for t in links(read(zh))])

    def test_every_page_opens_with_its_table_of_contents(self):
        for lang, path in all_documents():
            if path in READMES.values():
                continue
            text = read(path)
            with self.subTest(page=path):
                self.assertTrue(text.startswith("# "), "a page starts with its title")
                self.assertEqual(toc_found(text, lang), toc_for(text, lang),
                                 "run: python3 tests/test_docs.py --write-toc")

    def test_the_toc_check_notices_a_renamed_heading(self):
        path = os.path.join(DOCS["en"], "operations.md")
        text = read(path).replace("## A systemd unit", "## A systemd service")
        self.assertNotEqual(toc_found(text, "en"), toc_for(text, "en"))

    def test_relative_links_resolve(self):
        for _, path in all_documents():
            with self.subTest(page=path):
                self.assertEqual(broken_links(path), [])

    def test_the_link_check_notices_a_broken_anchor(self):
        text = read(READMES["en"]).replace("(#two-commands)", "(#no-such-heading)")
        self.assertEqual(broken_links(READMES["en"], text), ["#no-such-heading"])
        text = read(READMES["en"]).replace("(docs/en/faq.md)", "(docs/en/no-such-page.md)")
        self.assertEqual(broken_links(READMES["en"], text), ["docs/en/no-such-page.md"])

    def test_only_generator_markers_as_placeholders(self):
        for _, path in all_documents():
            expected = []
            for name in MARKERS.get(os.path.basename(path), ()):
                expected += ["<!-- %s:begin -->" % name, "<!-- %s:end -->" % name]
            with self.subTest(page=path):
                found = [line.strip() for line in read(path).splitlines() if "<!--" in line]
                self.assertEqual(found, expected)


class NamesTest(unittest.TestCase):
    """What the documents point a reader at exists: files, modules, tests."""

    @classmethod
    def setUpClass(cls):
        cls.file_names = checkout_file_names()

    def documents(self) -> list:
        return [path for _, path in all_documents()] + ["SKILL.md"]

    def test_every_path_and_file_name_exists(self):
        for path in self.documents():
            with self.subTest(page=path):
                self.assertEqual(unknown_paths(read(path), self.file_names), [])

    def test_the_path_check_notices_a_moved_module(self):
        text = "`scripts/distnode/run/runner.py`, `run/jobs.py`, `lua/elect.lua`, `taskq.py`, `spawn.py`"
        self.assertEqual(unknown_paths(text, self.file_names), ["scripts/distnode/run/runner.py", "taskq.py"])
        self.assertEqual(unknown_paths("`core/exits.py`, `core/errs.py`", self.file_names), ["core/errs.py"])

    def test_every_test_named_exists(self):
        for path in self.documents():
            with self.subTest(page=path):
                self.assertEqual(unknown_tests(read(path)), [])

    def test_the_test_check_notices_a_moved_test(self):
        self.assertEqual(unknown_tests("`test_resp.ParserTest.test_arrays_nested_too_deep_are_a_protocol_error_"
                                       "not_a_recursion_error`"), [])
        self.assertEqual(unknown_tests("`test_redis_client.ParserTest.test_arrays_nested_too_deep_are_a_protocol_"
                                       "error_not_a_recursion_error`, `ConfigCases.test_hostile_json`, "
                                       "`ConfigCases.test_no_such_case`"),
                         ["test_redis_client.ParserTest.test_arrays_nested_too_deep_are_a_protocol_error_not_a_"
                          "recursion_error", "ConfigCases.test_no_such_case"])


class CiTest(unittest.TestCase):
    def test_ci_runs_the_documented_test_command(self):
        lines = [line.split("#", 1)[0] for line in read(os.path.join(".ci", "run")).splitlines()]
        self.assertTrue(any(re.search(r"(^|[\s/])tests/run\.sh(\s|$)", line) for line in lines),
                        ".ci/run does not call tests/run.sh")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-toc"]:
        for language, page in all_documents():
            if page not in READMES.values():
                write_toc(page, language)
    else:
        unittest.main()
