"""scripts/distnode/lua: the script files, their headers and includes, the loader, the decoders, the fence.

Every script is loaded into a real redis-server; the decoders are fed real replies; the fence
contract (wrong epoch, wrong instance, unconfirmed term) is tried against the real scripts.
"""

import ast
import os
import re
import tempfile
import unittest
from unittest import mock

from support.base import REPO, SCRIPTS, RedisCase
from support.fence import fenced_probe

from distnode import lua
from distnode.core import keys, local_state
from distnode.redis.client import Redis
from distnode.redis.errors import FencedError, StaleError
from distnode.redis.script import Script

LUA_DIR = os.path.join(SCRIPTS, "distnode", "lua")
NAMES = sorted(f[:-4] for f in os.listdir(LUA_DIR) if f.endswith(".lua"))
PIECES = sorted(f[:-4] for f in os.listdir(os.path.join(LUA_DIR, "include")) if f.endswith(".lua"))
HEADER_ENTRY = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(?:\.\.(\d*))?\] \S")


def header_of(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    out = []
    for line in lines:
        if not line.startswith("--") or line.startswith("--- @include"):
            break
        out.append(line)
    return out


def entries(header: list, kind: str) -> list:
    """[(first, last or None for open-ended)] of the header's KEYS or ARGV lines, in order."""
    found = []
    for line in header:
        match = HEADER_ENTRY.match(line)
        if match and match.group(1) == kind:
            first, last = int(match.group(2)), match.group(3)
            found.append((first, None if last == "" else int(last) if last else first))
    return found


class Files(unittest.TestCase):
    def test_every_script_has_a_header_naming_each_key_and_argument_and_the_reply(self):
        self.assertGreaterEqual(len(NAMES), 27)
        for name in NAMES:
            with self.subTest(script=name):
                header = header_of(os.path.join(LUA_DIR, name + ".lua"))
                self.assertTrue(header and header[0].startswith("-- %s: " % name), header[:1])
                self.assertTrue(any(line.startswith("-- Reply: ") for line in header), "no '-- Reply:' line")
                for kind in ("KEYS", "ARGV"):
                    if "-- %s: none" % kind in header:
                        self.assertEqual(entries(header, kind), [], "%s: none, yet %s lines" % (kind, kind))
                        continue
                    spans = entries(header, kind)
                    self.assertTrue(spans, "no %s lines" % kind)
                    expected = 1
                    for first, last in spans:  # contiguous from 1; an open-ended span only last
                        self.assertEqual(first, expected, "%s[%d] out of order or missing" % (kind, expected))
                        if last is None:
                            self.assertEqual((first, last), spans[-1], "%s[%d..] must come last" % (kind, first))
                            break
                        expected = last + 1

    def test_elect_numbers_its_steps_as_the_electors_docstring_does(self):
        """elect.lua's ``-- N.`` comments are the docstring's steps 1-6, each once, in order (7 is the elector's)."""
        with open(os.path.join(LUA_DIR, "elect.lua"), encoding="utf-8") as handle:
            marked = re.findall(r"^-- (\d+)\. (\w+)", handle.read(), re.M)
        with open(os.path.join(SCRIPTS, "distnode", "cluster", "elector.py"), encoding="utf-8") as handle:
            documented = re.findall(r"^  (\d+)\. ", handle.read(), re.M)
        self.assertEqual(documented, [str(n) for n in range(1, 8)])
        self.assertEqual([number for number, _ in marked], documented[:6], marked)

    def test_every_include_says_what_it_defines(self):
        for piece in PIECES:
            with self.subTest(include=piece):
                header = header_of(os.path.join(LUA_DIR, "include", piece + ".lua"))
                self.assertTrue(header and header[0].startswith("-- include %s: " % piece), header[:1])

    def test_key_count_comes_from_the_header(self):
        self.assertEqual(lua.key_count("-- KEYS[1] a\n-- KEYS[2] b\n-- ARGV[5] c"), (2, False))
        self.assertEqual(lua.key_count("-- KEYS[1..7] header\n-- KEYS[8] x\n-- KEYS[9..] streams"), (8, True))
        self.assertEqual(lua.key_count("-- KEYS[1] leader\n-- KEYS[4..10] header\n-- KEYS[12] events"), (12, False))

    def test_includes_resolve_once_each_and_unknown_ones_are_refused(self):
        for name in NAMES:
            text = lua.source(name)
            for definition in re.findall(r"^local function (\w+)", text, re.M):
                self.assertEqual(len(re.findall(r"^local function %s\(" % definition, text, re.M)), 1,
                                 "%s defines %s twice" % (name, definition))
            self.assertNotIn("@include", text)
        out = []
        lua._resolve('--- @include "fence"\n--- @include "type_guard"\n--- @include "fence"\nreturn 1', set(), out)
        self.assertEqual(sum(line.startswith("local function expect(") for line in out), 1)
        self.assertEqual(out[-1], "return 1")
        with self.assertRaises(lua.UnknownInclude):
            lua._resolve('--- @include "no_such_piece"\n', set(), [])

    def test_scripts_that_read_the_clock_call_replicate_commands_first(self):
        for name in NAMES:
            text = lua.source(name)
            if "'TIME'" not in text:
                continue
            with self.subTest(script=name):  # the first top-level statement that is not a definition
                top = [line for line in text.splitlines() if line and not line[0].isspace()
                       and not line.startswith(("local function", "end", "local EPOCH_LIMIT", "local EVENTS_KEY"))
                       and not re.match(r"^local [A-Z_, ]+$", line) and line != "local EVENTS_MAXLEN = 0"]
                self.assertEqual(top[0], "redis.replicate_commands()", top[:3])

    def test_epoch_limit_matches_local_state(self):
        text = lua.include_text("epoch_guard")
        self.assertIn("local EPOCH_LIMIT = %d" % local_state.EPOCH_LIMIT, text)
        digits = len(str(local_state.EPOCH_LIMIT)) - 1
        self.assertIn("#raw <= %d" % digits, text)
        self.assertIn("10^%d" % digits, text)

    def test_callers_pass_the_number_of_keys_the_header_names(self):
        """Every lua.run / lua.script call with a literal key tuple (or literal + a name) in scripts/."""
        counts = {name: lua.key_count("\n".join(header_of(os.path.join(LUA_DIR, name + ".lua")))) for name in NAMES}
        checked = 0
        for folder, _dirs, files in os.walk(SCRIPTS):
            for file in files:
                if file.endswith(".py"):
                    checked += self._check_calls(os.path.join(folder, file), counts)
        self.assertGreaterEqual(checked, 8, "too few call sites found: has the calling convention changed?")

    def _check_calls(self, path: str, counts: dict) -> int:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        checked = 0
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "lua" and len(node.args) >= 3):
                continue
            name_node, keys_node = node.args[1], node.args[2]
            if not (isinstance(name_node, ast.Constant) and isinstance(keys_node, ast.Tuple)):
                continue
            numkeys, variadic = counts[name_node.value]
            where = "%s:%d %s" % (os.path.relpath(path, REPO), node.lineno, name_node.value)
            if variadic:
                self.assertGreaterEqual(len(keys_node.elts), numkeys, where)
            else:
                self.assertEqual(len(keys_node.elts), numkeys, where)
            checked += 1
        return checked


class Source(unittest.TestCase):
    """What the loader refuses to strip, in files of a scratch lua dir: an error naming the file and line."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        os.mkdir(os.path.join(self.dir, "include"))
        self.write("include/piece.lua", "-- include piece: x\nlocal x = 1\n")
        for name, value in (("LUA_DIR", self.dir), ("INCLUDE_DIR", os.path.join(self.dir, "include")),
                            ("_loaded", {})):
            patcher = mock.patch.object(lua, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def assert_refused(self, text: str, line: int, error=None):
        path = self.write("s.lua", "-- s: x\n-- KEYS[1] k\n" + text)
        for load in (lua.source, lua.script):
            with self.assertRaises(error or lua.LuaSourceError) as caught:
                load("s")
            self.assertIn("%s:%d:" % (path, line), str(caught.exception))

    def test_a_well_formed_include_resolves(self):
        self.write("s.lua", '-- s: x\n-- KEYS[1] k\n--- @include "piece"  \nreturn x\n')
        self.assertEqual(lua.source("s"), "local x = 1\nreturn x\n")

    def test_an_include_line_with_a_typo_is_refused_not_dropped(self):
        for line in ('---  @include "piece"', "--- @include 'piece'", '--- @include "Piece"', '-- @include "piece"',
                     '---@include "piece"', '--- @include "piece" -- why', '--- @include "pie-ce"',
                     '  --- @include "piece"', '--- @include piece', '--- @include "piece'):
            with self.subTest(line=line):
                lua._loaded.clear()
                self.assert_refused("return 1\n" + line + "\nreturn x\n", 4)

    def test_an_unknown_include_names_the_including_line(self):
        self.assert_refused('--- @include "nope"\nreturn 1\n', 3, lua.UnknownInclude)

    def test_long_brackets_are_refused(self):
        for text, line in (("--[[ a block\ncomment ]]\nreturn 1\n", 3),
                           ("local s = [[\n-- not a comment\n]]\nreturn s\n", 3),
                           ("return 1\nlocal s = [==[ x ]==]\n", 4)):
            with self.subTest(text=text):
                lua._loaded.clear()
                self.assert_refused(text, line)
        block = self.write("include/block.lua", "-- include block: x\n--[[\nlocal x = 1\n]]\n")
        self.write("s.lua", '-- s: x\n-- KEYS[1] k\n--- @include "block"\nreturn 1\n')
        with self.assertRaises(lua.LuaSourceError) as caught:
            lua.source("s")
        self.assertIn("%s:2:" % block, str(caught.exception))  # the include's own file and line

    def test_only_the_header_counts_keys(self):
        body = "-- KEYS[2] b\nlocal s = 1\n-- KEYS[7] a body comment naming a key\nreturn s\n"
        self.assertEqual(lua.key_count("-- KEYS[1] a\n" + body), (2, False))
        self.write("s.lua", "-- s: x\n-- KEYS[1] a\n" + body)
        self.assertEqual(lua.script("s").numkeys, 2)


class Loader(RedisCase):
    def setUp(self):
        super().setUp()
        self.client = Redis(port=self.server.port)
        self.addCleanup(self.client.close)

    def test_every_script_loads_in_redis(self):
        for name in NAMES:
            with self.subTest(script=name):
                sha = self.server.command("SCRIPT", "LOAD", lua.source(name))
                self.assertRegex(sha, "^[0-9a-f]{40}$")

    def test_script_is_cached_and_sends_only_code(self):
        script = lua.script("heartbeat")
        self.assertIs(lua.script("heartbeat"), script)
        self.assertIsInstance(script, Script)
        self.assertEqual(script.numkeys, 4)
        self.assertIsNone(lua.script("task_claim").numkeys)  # variadic: lua.run checks the minimum
        self.assertFalse([line for line in script.source.splitlines() if line.strip().startswith("--")])

    def test_a_wrong_key_count_is_refused_before_anything_is_sent(self):
        lua.run(self.client, "prune", (keys.nodes(),), (3600,))  # connected, the script cached
        trips = self.client.round_trips
        for name, key_names in (("prune", ()), ("prune", ("a", "b")), ("heartbeat", ("a", "b", "c")),
                                ("task_claim", ("k",) * 8), ("task_release", ("k",) * 7)):
            with self.subTest(script=name, keys=len(key_names)):
                with self.assertRaises(ValueError):
                    lua.run(self.client, name, key_names, ())
        self.assertEqual(self.client.round_trips, trips)

    def test_the_first_run_is_one_round_trip(self):
        trips = self.client.round_trips
        self.assertEqual(lua.run(self.client, "prune", (keys.nodes(),), (3600,)), [])
        self.assertEqual(self.client.round_trips - trips, 1)


class Decoders(RedisCase):
    """Each decoder on a real reply of its script."""

    def setUp(self):
        super().setUp()
        self.client = Redis(port=self.server.port)
        self.addCleanup(self.client.close)

    def run_lua(self, name, key_names, args=()):
        return lua.run(self.client, name, key_names, args)

    def beat(self, node="n1", token="t1"):
        fields = '{"id":"%s","host":"h","pid":7,"instance":"%s"}' % (node, token)
        return self.run_lua("heartbeat", (keys.nodes(), keys.heartbeat(node), keys.epoch(), keys.bootstrap()),
                            (node, 60000, fields, 0, 1000))

    def elect(self, node="n1", token="t1"):
        return self.run_lua("elect", (keys.leader(), keys.epoch(), keys.heartbeat(node), keys.nodes(), keys.events(),
                                      keys.bootstrap(), keys.released(node), keys.term(), keys.server()),
                            (node, 30000, 0, 100, 1000, token, "1"))

    def lead(self):
        """n1 leads at a confirmed term; returns its epoch."""
        self.beat()
        self.server.command("SET", keys.epoch(), "4")  # no bootstrap round: Redis has an epoch
        obs = self.elect()
        self.assertEqual(obs.outcome, "acquired", obs)
        return obs.epoch

    def test_membership_and_election(self):
        beat = self.beat()
        self.assertEqual((beat.outcome, beat.epoch, beat.other), ("ok", 0, None))
        self.assertIsInstance(beat.now_s, float)
        other = self.beat(token="t2")
        self.assertEqual(other.outcome, "collision")
        self.assertIn('"instance":"t1"', other.other)
        self.server.command("SET", keys.epoch(), "4")
        obs = self.elect()
        self.assertEqual((obs.outcome, obs.leader, obs.epoch, obs.pttl_ms, obs.confirmed), ("acquired", "n1", 5,
                                                                                           30000, True))
        self.assertRegex(obs.run_id, "^[0-9a-f]{40}$")
        self.assertEqual(self.elect().outcome, "renewed")
        fence = (keys.leader(), keys.epoch(), keys.term())
        self.assertIsInstance(self.run_lua("confirm_term", fence, ("n1", 5, "t1")), int)
        self.assertIs(self.run_lua("accept_term", fence, ("n1", 5, "t1")), True)
        scan = self.run_lua("failover_scan", (keys.leader(), keys.epoch(), keys.nodes(), keys.events(),
                                              keys.heartbeat("n1"), keys.term()), ("n1", "", "0", 100, 100, "t1"))
        self.assertEqual((scan.outcome, scan.epoch, scan.cursor, scan.marked), ("leader", "5", "0", []))
        self.assertEqual(self.run_lua("release", (keys.leader(), keys.epoch(), keys.events(), keys.released("n1"),
                                                  keys.term()), ("n1", "", 100, 30000, "t1")), True)
        left = self.run_lua("leave", (keys.leader(), keys.epoch(), keys.heartbeat("n1"), keys.nodes(), keys.events(),
                                      keys.term()), ("n1", 100, "t1"))
        self.assertEqual(left, ("left", False, True, "", ""))
        self.server.command("HSET", keys.nodes(), "gone", '{"status":"left","left_at":1}')
        self.assertEqual(self.run_lua("prune", (keys.nodes(),), (3600,)), ["gone"])

    def test_redlock(self):
        claim_keys = (keys.leader(), keys.epoch(), keys.redlock_claim())
        self.assertEqual(self.run_lua("redlock_claim", claim_keys, ("n1", 30000, "t1")), ("mine", "", 0, 0))
        self.assertEqual(self.run_lua("redlock_claim", claim_keys, ("n2", 30000, "t2")), ("other", "n1", 0, 0))
        self.assertIs(self.run_lua("redlock_raise", claim_keys, ("n1", 3, "t1")), True)
        self.beat()
        announce_keys = (keys.leader(), keys.epoch(), keys.heartbeat("n1"), keys.nodes(), keys.events(), keys.term())
        self.assertEqual(self.run_lua("redlock_announce", announce_keys, ("n1", 20000, 4, 100, "t1", "1")),
                         ("ok", 4, True, ""))
        self.assertEqual(self.run_lua("redlock_announce", announce_keys, ("n2", 20000, 9, 100, "t2", "1")),
                         ("held", 4, False, "n1"))
        self.assertIs(self.run_lua("redlock_release", (keys.leader(), keys.redlock_claim()), ("n1", "t1", "")), True)

    def test_state_and_kv(self):
        epoch = self.lead()
        fence = (keys.leader(), keys.epoch(), keys.term(), keys.state())
        content = '{"epoch":%d}' % epoch
        published = self.run_lua("publish_state", fence, ("n1", epoch, "t1", content, 0, 0))
        self.assertEqual(published[:3], ("published", epoch, 1))
        self.assertIsInstance(published.doc, bytes)
        read = self.run_lua("state_read", (keys.leader(), keys.state()), (0, 0))
        self.assertEqual((read.leader, read.epoch, read.version, read.doc), ("n1", epoch, 1, published.doc))
        self.assertIsNone(self.run_lua("state_read", (keys.leader(), keys.state()), (epoch, 1)).doc)
        kv = (keys.kv("a"), keys.kv_index(), keys.kv_version())
        written = self.run_lua("kv_set", kv + (keys.kv_op("op1"),), ("a", "1", "", 60000, keys.kv_channel()))
        self.assertEqual((written.ok, written.version), (True, 1))
        self.assertIsInstance(written.updated_s, float)
        self.assertEqual(self.run_lua("kv_set", kv + (keys.kv_op("op1"),), ("a", "1", "", 60000, keys.kv_channel())),
                         written, "the same operation again: its first outcome, nothing written")
        self.assertEqual(self.run_lua("kv_set", kv + (keys.kv_op("op2"),), ("a", "2", "0", 60000, keys.kv_channel()))
                         [:2], (False, 1))
        listed = self.run_lua("kv_list", (keys.kv_index(),), ("-", "+", 10, keys.kv("")))
        self.assertEqual([(e.name, e.version) for e in listed], [("a", 1)])
        deleting = kv[:2] + (keys.kv_op("op3"),)
        self.assertEqual(self.run_lua("kv_delete", deleting, ("a", "1", keys.kv_channel(), 60000)), ("deleted", 1))
        self.assertEqual(self.run_lua("kv_delete", deleting, ("a", "1", keys.kv_channel(), 60000)), ("deleted", 1))
        self.assertEqual(self.run_lua("kv_delete", kv[:2] + (keys.kv_op("op4"),), ("a", "", keys.kv_channel(), 60000)),
                         ("missing", 0))
        self.assertTrue(0 < self.client.execute("PTTL", keys.kv_op("op3")) <= 60000)
        self.assertEqual(self.client.execute("EXISTS", keys.kv_op("op2"), keys.kv_op("op4")), 0,
                         "only a write leaves a record")

    def test_tasks(self):
        header_keys = (keys.task_index("pending"), keys.task_index("running"), keys.task_index("done"),
                       keys.task_index("dead"), keys.task_delayed(), keys.task_dead(), keys.task_streams())
        header_args = ("n1", "workers", keys.task(""), keys.task_idempotency(""), 100, 1000, 60000, 1000)
        latch_args = (keys.task_ended(""), 60000)  # tasks/common.end_latch(): scripts that end tasks take it
        stream = keys.task_stream("n1")
        self.beat()
        submit = self.run_lua("task_submit", header_keys + (stream, keys.nodes(), keys.task_routes(), keys.events()),
                              header_args + ("id1", "echo", "{}", "n1", "", 2, 5000, "", 100))
        self.assertEqual(submit, ("created", "id1", True))
        prepared = self.run_lua("task_prepare", header_keys + (keys.task_routes(), stream), header_args + (10,))
        self.assertEqual(prepared, (0, [], None))
        self.client.request([("XREADGROUP", "GROUP", "workers", "n1", "COUNT", 10, "STREAMS", stream, ">")])
        claim = self.run_lua("task_claim", header_keys + (keys.nodes(), keys.events(), stream),
                             header_args + (10, "t1", keys.task_lease(""), 60000, 100, "") + latch_args)
        task = claim.task
        self.assertEqual((task.task_id, task.type, task.payload, task.attempt, task.max_attempts, task.timeout_ms,
                          task.stream, claim.waiting, claim.interrupted),
                         ("id1", "echo", b"{}", 1, 2, 5000, stream, 0, []))
        renew = self.run_lua("task_renew", (keys.task_lease("id1"), keys.task("id1"), keys.events()),
                             (task.token + " t1", 60000, 100, "n1"))
        self.assertIs(renew, True)
        record = self.run_lua("task_record", (keys.task("id1"),), (1000,))
        self.assertEqual((record["state"], record["payload"]), (b"running", b"{}"))
        finish = self.run_lua("task_finish", header_keys + (stream, keys.nodes()),
                              header_args + ("id1", task.token, task.entry, "ok", "out", 0, 3, "t1") + latch_args)
        self.assertEqual(finish, ("done", "", ""))
        self.assertEqual(self.run_lua("task_finish", header_keys + (stream, keys.nodes()),
                                      header_args + ("id1", task.token, task.entry, "ok", "out", 0, 3, "t1")
                                      + latch_args),
                         ("stale", "done", task.token))
        self.assertEqual(self.run_lua("task_release", header_keys + (keys.nodes(), stream),
                                      header_args + ("all", "t1")), [])
        retrying = header_keys + (keys.task_op("op1"),)
        self.assertEqual(self.run_lua("task_retry", retrying, header_args + ("id1", 60000) + latch_args),
                         ("not_dead", "done"))
        self.assertEqual(self.run_lua("task_retry", retrying, header_args + ("nope", 60000) + latch_args),
                         ("missing", ""))
        self.assertEqual(self.run_lua("task_purge", header_keys, header_args + ("done", 0, 10) + latch_args), (1, 1))
        self.assertEqual(self.run_lua("task_record", (keys.task("id1"),), (1000,)), {})
        epoch = self.lead()
        reclaim = self.run_lua("task_reclaim", (keys.leader(), keys.epoch(), keys.term()) + header_keys
                               + (keys.task_sweep(), keys.events()),
                               ("n1", epoch, "t1") + header_args + (1000, 100, keys.heartbeat(""), keys.task_lease(""),
                                                                    100) + latch_args)
        self.assertEqual(reclaim, (False, []))


class ResultTypes(unittest.TestCase):
    """A decoded result reads as the namedtuple it replaced: a tuple with named items."""

    def test_a_result_is_a_tuple_with_named_items(self):
        from distnode.lua import results
        beat = results.heartbeat([b"ok", b"1.5", 7])
        self.assertEqual(beat, ("ok", 1.5, 7, None))
        self.assertEqual((beat.outcome, beat.now_s, beat.epoch, beat.other), ("ok", 1.5, 7, None))
        self.assertEqual(beat[:2], ("ok", 1.5))
        self.assertEqual(repr(beat), "Heartbeat(outcome='ok', now_s=1.5, epoch=7, other=None)")
        self.assertIs(type(beat), results.Heartbeat)
        self.assertEqual(results.Heartbeat._fields, ("outcome", "now_s", "epoch", "other"))
        with self.assertRaises(TypeError):
            results.Heartbeat("ok", 1.5)
        with self.assertRaises(AttributeError):
            results.NoSuchResult  # noqa: B018

    def test_task_results_too(self):
        from distnode.lua import task_results
        reclaim = task_results.task_reclaim([1, [b"t1", b"retry", b"lease lapsed"]])
        self.assertEqual(reclaim, (True, [("t1", "retry", "lease lapsed")]))
        self.assertEqual(reclaim.notes[0].reason, "lease lapsed")
        self.assertIs(type(reclaim), task_results.TaskReclaim)
        self.assertEqual(type(reclaim).__module__, "distnode.lua.task_results")


class Fence(RedisCase):
    """The fence (lua/include/fence.lua): a write goes through only as the term's process, at its epoch, confirmed."""

    def setUp(self):
        super().setUp()
        self.client = Redis(port=self.server.port)
        self.addCleanup(self.client.close)
        self.probe = Script("probe", fenced_probe("redis.call('SET', KEYS[4], ARGV[4])\nreturn 1"), 4)
        self.server.command("SET", keys.leader(), "n1")
        self.server.command("SET", keys.epoch(), "7")
        self.server.command("HSET", keys.term(), "node", "n1", "instance", "t1", "epoch", "7", "confirmed", "1")

    def write(self, node="n1", epoch=7, token="t1"):
        return self.probe(self.client, (keys.leader(), keys.epoch(), keys.term(), "probe"), (node, epoch, token, "x"))

    def assert_fenced(self, why, **writer):
        with self.assertRaises(FencedError) as caught:
            self.write(**writer)
        self.assertIn(why, str(caught.exception))
        self.assertIsNone(self.server.command("GET", "probe"))

    def test_the_holder_at_its_epoch_writes(self):
        self.assertEqual(self.write(), 1)
        self.assertEqual(self.server.command("GET", "probe"), "x")

    def test_wrong_epoch(self):
        self.assert_fenced("leader: n1, epoch 7", epoch=6)

    def test_another_node(self):
        self.assert_fenced("leader: n1, epoch 7", node="n2")

    def test_wrong_instance(self):
        self.assert_fenced("another process with this node id", token="t2")

    def test_stale_term(self):
        self.server.command("HSET", keys.term(), "epoch", "6")
        self.assert_fenced("a new term is due")

    def test_unconfirmed_term(self):
        self.server.command("HSET", keys.term(), "confirmed", "0")
        self.assert_fenced("not confirmed by replicas yet")
        fence = (keys.leader(), keys.epoch(), keys.term())  # the confirming scripts admit it
        self.assertIsInstance(lua.run(self.client, "confirm_term", fence, ("n1", 7, "t1")), int)
        self.assertIs(lua.run(self.client, "accept_term", fence, ("n1", 7, "t1")), True)
        self.assertEqual(self.write(), 1)

    def test_real_fenced_scripts_refuse(self):
        with self.assertRaises(FencedError):
            lua.run(self.client, "publish_state", (keys.leader(), keys.epoch(), keys.term(), keys.state()),
                    ("n1", 6, "t1", '{"epoch":6}', 0, 0))
        with self.assertRaises(FencedError):
            lua.run(self.client, "confirm_term", (keys.leader(), keys.epoch(), keys.term()), ("n1", 7, "t2"))
        self.server.command("HSET", keys.state(), "epoch", "9")
        with self.assertRaises(StaleError):
            lua.run(self.client, "publish_state", (keys.leader(), keys.epoch(), keys.term(), keys.state()),
                    ("n1", 7, "t1", '{"epoch":7}', 0, 0))


if __name__ == "__main__":
    unittest.main()
