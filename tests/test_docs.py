"""README.md and README_EN.md: every config key, every user-facing script, the two set-up commands.

No Redis needed. The documents are read as text; what is checked is what a
reader looks for: each key of ``config.SCHEMA`` written as `section.key`
(the Configuration reference), each script a user runs, the two commands of
"Two commands", no placeholder left by the assembly, and that CI runs the
test command the README gives.
"""

import os
import re
import sys
import unittest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
_SCRIPTS = os.path.join(_ROOT, "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

from distnode.core import config  # noqa: E402

READMES = ("README.md", "README_EN.md")
USER_SCRIPTS = ("heartbeat.py", "leader_election.py", "failover_manager.py", "state_sync.py",
                "node_manager.py", "task_queue.py")
# Scripts with a main() that users reach through start-node.sh, not by name.
INTERNAL_SCRIPTS = {"node_setup.py": "./start-node.sh"}
SETUP_COMMANDS = ("./start-node.sh demo", "tests/run.sh")


def read(name: str) -> str:
    with open(os.path.join(_ROOT, name), encoding="utf-8") as f:
        return f.read()


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


class ReadmeTest(unittest.TestCase):
    def setUp(self):
        self.docs = {name: read(name) for name in READMES}

    def test_every_config_key_is_documented(self):
        for name, text in self.docs.items():
            with self.subTest(readme=name):
                self.assertEqual(missing_keys(text), [], "%s lacks these config keys" % name)

    def test_the_check_notices_a_missing_key(self):
        text = self.docs["README_EN.md"].replace("`tasks.reclaim_grace_s`", "`tasks.grace`")
        self.assertEqual(missing_keys(text), ["tasks.reclaim_grace_s"])

    def test_every_user_facing_script_is_documented(self):
        for name, text in self.docs.items():
            for script in USER_SCRIPTS:
                with self.subTest(readme=name, script=script):
                    self.assertIn(script, text)

    def test_scripts_with_a_main_are_known(self):
        # A new script with a main() must be documented: add it to USER_SCRIPTS (and the READMEs)
        # or, if start-node.sh runs it, to INTERNAL_SCRIPTS.
        self.assertEqual(scripts_with_main(), set(USER_SCRIPTS) | set(INTERNAL_SCRIPTS))

    def test_internal_scripts_are_reached_through_documented_commands(self):
        for name, text in self.docs.items():
            for script, command in INTERNAL_SCRIPTS.items():
                with self.subTest(readme=name, script=script):
                    self.assertIn(command, text)

    def test_setup_commands(self):
        for name, text in self.docs.items():
            for command in SETUP_COMMANDS:
                with self.subTest(readme=name, command=command):
                    self.assertIn(command, text)

    def test_no_placeholder_left_in_the_english_readme(self):
        text = self.docs["README_EN.md"]
        left = [line for line in text.splitlines() if "<!--" in line]
        self.assertEqual(left, [], "README_EN.md still has placeholders")

    def test_language_links(self):
        self.assertIn("[English](README_EN.md)", "\n".join(self.docs["README.md"].splitlines()[:5]))
        self.assertIn("[中文](README.md)", "\n".join(self.docs["README_EN.md"].splitlines()[:5]))


class CiTest(unittest.TestCase):
    def test_ci_runs_the_documented_test_command(self):
        lines = [line.split("#", 1)[0] for line in read(os.path.join(".ci", "run")).splitlines()]
        self.assertTrue(any(re.search(r"(^|[\s/])tests/run\.sh(\s|$)", line) for line in lines),
                        ".ci/run does not call tests/run.sh")


if __name__ == "__main__":
    unittest.main()
