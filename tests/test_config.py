"""scripts/config.py: precedence of the sources, every validation message, --print-config."""

import ast
import json
import os
import subprocess
import sys
import unittest
from unittest import mock

from support.base import SCRIPTS as _SCRIPTS, TempDirCase  # first: puts scripts/ on sys.path
from distnode.core import config, redact, settings, validate

SECRET = "s3cr3t-Pass-Phrase"
OUR_ENV = list(config.ENV_OVERRIDES) + ["OPENCLAW_DISTRIBUTED_CONFIG_DIR", "OPENCLAW_DISTRIBUTED_LOG_DIR"]
MIB = 1024 * 1024


class ConfigCase(TempDirCase):
    """A temp config dir, and an environment without any of our variables."""

    tmp_prefix = "dn-config-"

    def setUp(self):
        super().setUp()
        self.dir = self.tmp
        self.patch_env(drop=OUR_ENV)

    def write(self, name: str, content, mode: int = 0o600) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content if isinstance(content, str) else json.dumps(content, indent=2))
        os.chmod(path, mode)
        return path

    def load(self, cfg=None, secrets=None, **env):
        if cfg is not None:
            self.write("config.json", cfg)
        if secrets is not None:
            self.write("secrets.json", secrets)
        with mock.patch.dict(os.environ, env):
            return config.load(self.dir, os.path.join(self.dir, "logs"))

    def error(self, cfg=None, secrets=None, **env) -> str:
        with self.assertRaises(config.ConfigError) as ctx:
            self.load(cfg, secrets, **env)
        return str(ctx.exception)


class PrecedenceTest(ConfigCase):
    def test_defaults(self):
        cfg = self.load({})
        self.assertEqual(cfg["node"]["heartbeat_interval"], 10)
        self.assertEqual(cfg["redis"]["port"], 6379)
        self.assertEqual(cfg.sources["redis.port"], "default")
        self.assertEqual(cfg.lease_ttl_s, 30)  # 0: falls back to heartbeat_ttl
        self.assertEqual(cfg.renew_interval_s, 10)
        self.assertTrue(cfg.node_id)
        self.assertEqual(cfg.sources["node.id"], "host name")
        self.assertEqual(cfg.run_dir, os.path.join(self.dir, "logs", "run"))
        self.assertEqual(cfg.warnings, [])

    def test_every_schema_default_is_valid(self):
        for setting in settings.SETTINGS:
            with self.subTest(key=setting.name):
                validate.check(setting, setting.default, setting.name)

    def test_default_config_json_is_valid(self):
        shipped = os.path.join(config.DEFAULT_CONFIG_DIR, "config.json")
        cfg = config.load(config.DEFAULT_CONFIG_DIR, self.dir)
        self.assertEqual(cfg.warnings, [], shipped)

    def test_default_lt_config_lt_secrets_lt_env(self):
        cfg = self.load({"redis": {"host": "from-config", "port": 7001, "db": 1, "password": "p-config"}},
                        {"redis": {"port": 7002, "password": "p-secrets"}})
        r = cfg["redis"]
        self.assertEqual((r["host"], r["port"], r["db"], r["password"]), ("from-config", 7002, 1, "p-secrets"))
        self.assertEqual(cfg.sources["redis.host"], "config.json")
        self.assertEqual(cfg.sources["redis.port"], "secrets.json")
        self.assertEqual(cfg.sources["redis.username"], "default")
        cfg = self.load(REDIS_PORT="7003", REDIS_PASSWORD="p-env", REDIS_DB="2", OPENCLAW_NODE_ID="env-node",
                        REDIS_HOST="env-host", REDIS_USERNAME="env-user", LOG_LEVEL="debug")
        r = cfg["redis"]
        self.assertEqual((r["host"], r["port"], r["db"], r["password"], r["username"]),
                         ("env-host", 7003, 2, "p-env", "env-user"))
        self.assertEqual(cfg.node_id, "env-node")
        self.assertEqual(cfg["logging"]["level"], "DEBUG")
        self.assertEqual(cfg.sources["redis.port"], "env REDIS_PORT")
        self.assertEqual(cfg.sources["node.id"], "env OPENCLAW_NODE_ID")

    def test_empty_env_value_is_ignored(self):
        cfg = self.load({"redis": {"port": 7001}}, REDIS_PORT="")
        self.assertEqual(cfg["redis"]["port"], 7001)

    def test_env_dirs(self):
        self.write("config.json", {"node": {"id": "from-env-dir"}})
        with mock.patch.dict(os.environ, OPENCLAW_DISTRIBUTED_CONFIG_DIR=self.dir,
                             OPENCLAW_DISTRIBUTED_LOG_DIR=os.path.join(self.dir, "L")):
            cfg = config.load()
        self.assertEqual(cfg.node_id, "from-env-dir")
        self.assertEqual(cfg.log_dir, os.path.join(self.dir, "L"))

    def test_lease_and_renew_explicit(self):
        cfg = self.load({"election": {"lease_ttl": 12, "renew_interval": 4}})
        self.assertEqual((cfg.lease_ttl_s, cfg.renew_interval_s), (12, 4))


class FileErrorTest(ConfigCase):
    def test_missing_file(self):
        msg = self.error()
        self.assertIn(os.path.join(self.dir, "config.json"), msg)
        self.assertIn("file not found", msg)

    def test_missing_secrets_is_fine(self):
        self.assertEqual(self.load({})["redis"]["password"], "")

    def test_empty_file(self):
        for content in ("", "  \n\t\n"):
            with self.subTest(content=content):
                self.assertIn("config.json: file is empty", self.error(content))

    def test_broken_json_names_line_and_column(self):
        msg = self.error('{\n  "node": {\n    "id": "a",,\n  }\n}\n')
        self.assertIn("config.json:3:15: invalid JSON", msg)
        msg = self.error({}, '{"redis": {"password": "%s"' % SECRET)
        self.assertIn("secrets.json:1:", msg)
        self.assertNotIn(SECRET, msg)

    def test_not_an_object(self):
        self.assertIn("top level must be a JSON object, got list", self.error("[1, 2]"))
        self.assertIn("'node' must be an object, got int", self.error({"node": 5}))

    def test_not_utf8(self):
        with open(os.path.join(self.dir, "config.json"), "wb") as fh:
            fh.write(b'{"node": {"id": "caf\xe9"}}')
        self.assertIn("not UTF-8", self.error())

    def test_unreadable_file(self):
        # Tests usually run as root, for whom chmod 000 hides nothing: a directory
        # named config.json gives the same "cannot read" path through the loader.
        os.mkdir(os.path.join(self.dir, "config.json"))
        msg = self.error()
        self.assertIn("config.json: cannot read", msg)

    @unittest.skipIf(hasattr(os, "geteuid") and os.geteuid() == 0,
                     "running as root: chmod 000 does not stop root reading (covered by the directory case)")
    def test_unreadable_file_chmod_000(self):
        self.write("config.json", {}, mode=0o000)
        self.assertIn("cannot read: Permission denied", self.error())

    def test_secrets_readable_by_others_warns(self):
        cfg = self.load({}, {"redis": {"password": SECRET}})
        self.assertEqual(cfg.warnings, [])
        os.chmod(os.path.join(self.dir, "secrets.json"), 0o644)
        cfg = self.load()
        self.assertEqual(len(cfg.warnings), 1)
        self.assertIn("secrets.json is readable by group or others (mode 0644)", cfg.warnings[0])
        self.assertIn("chmod 600", cfg.warnings[0])
        self.assertNotIn(SECRET, cfg.warnings[0])


class ValueErrorTest(ConfigCase):
    def assert_error(self, cfg, *fragments, **env):
        msg = self.error(cfg, **env)
        for fragment in fragments:
            self.assertIn(fragment, msg)
        if not env:
            self.assertIn(os.path.join(self.dir, "config.json"), msg)
        return msg

    def test_wrong_types(self):
        cases = [
            ({"node": {"heartbeat_interval": "10"}}, 'node.heartbeat_interval must be a number, got "10"'),
            ({"node": {"retry_count": 1.5}}, "node.retry_count must be a whole number, got 1.5"),
            ({"node": {"retry_count": True}}, "node.retry_count must be a whole number, got true"),
            ({"redis": {"port": "6379"}}, 'redis.port must be a whole number, got "6379"'),
            ({"redis": {"tls": "yes"}}, 'redis.tls must be true or false, got "yes"'),
            ({"redis": {"host": 5}}, "redis.host must be a string, got 5"),
            ({"node": {"labels": "gpu"}}, "node.labels must be a list of non-empty strings"),
            ({"node": {"labels": [""]}}, "node.labels must be a list of non-empty strings"),
            ({"hooks": {"on_become_leader": "echo hi"}}, "hooks.on_become_leader must be an argv list"),
            ({"tasks": {"handlers": {"echo": []}}}, "tasks.handlers.echo must be a non-empty argv list"),
            ({"logging": {"level": "LOUD"}}, "logging.level must be one of DEBUG, INFO, WARNING, ERROR"),
            ({"redis": {"instances": {"host": "a"}}}, "redis.instances must be a list"),
            ({"redis": {"instances": [{"host": "a", "prt": 1}]}}, "redis.instances[0]: unknown key 'prt'"),
        ]
        for cfg, fragment in cases:
            with self.subTest(cfg=cfg):
                self.assert_error(cfg, fragment)

    def test_zero_and_negative_intervals(self):
        for key in ("heartbeat_interval", "heartbeat_ttl"):
            for value in (0, -1, -0.5):
                with self.subTest(key=key, value=value):
                    self.assert_error({"node": {key: value}}, "node.%s must be a number above 0" % key)
        self.assert_error({"node": {"retry_count": -1}}, "node.retry_count must be 0 or more")
        self.assert_error({"redis": {"socket_timeout": 0}}, "redis.socket_timeout must be a number above 0")

    def test_negative_fractions_where_0_or_more_is_allowed(self):
        for section, key in (("node", "retry_delay"), ("election", "renew_interval"), ("tasks", "backoff_base_s")):
            with self.subTest(key=key):
                self.assert_error({section: {key: -0.5}}, "%s.%s must be 0 or more, got -0.5" % (section, key))
        self.assertEqual(self.load({"node": {"retry_delay": 0}})["node"]["retry_delay"], 0)

    def test_nan_and_infinity(self):
        for raw in ("NaN", "Infinity", "-Infinity"):
            with self.subTest(raw=raw):
                msg = self.error('{"node": {"heartbeat_interval": %s}}' % raw)
                self.assertIn("node.heartbeat_interval must be a finite number", msg)

    def test_ttl_below_twice_the_interval(self):
        self.assertIn("node.heartbeat_ttl (19s) must be at least twice node.heartbeat_interval (10s)",
                      self.error({"node": {"heartbeat_interval": 10, "heartbeat_ttl": 19}}))
        self.load({"node": {"heartbeat_interval": 10, "heartbeat_ttl": 20}})  # exactly twice is fine

    def test_lease_not_longer_than_renew(self):
        self.assertIn("election.lease_ttl (10s) must be longer than election.renew_interval (10s)",
                      self.error({"election": {"lease_ttl": 10, "renew_interval": 10}}))

    def test_socket_timeout_at_least_half_the_lease(self):
        self.assertIn("redis.socket_timeout (15s) must be below half of the lease (30s)",
                      self.error({"redis": {"socket_timeout": 15}}))
        self.assertIn("redis.connect_timeout (2s) must be below half of the lease (4s)",
                      self.error({"node": {"heartbeat_interval": 1, "heartbeat_ttl": 4},
                                  "redis": {"connect_timeout": 2, "socket_timeout": 1}}))
        self.load({"redis": {"socket_timeout": 14.9}})

    def test_a_task_record_must_fit_in_one_reply(self):
        # a claim and a `status` carry the payload and the result in one reply; with 64 KiB to spare
        msg = self.error({"redis": {"max_reply_bytes": 2 * MIB}, "tasks": {"max_payload_bytes": 2 * MIB - 65536}})
        for fragment in ("redis.max_reply_bytes (2097152) must be at least tasks.max_payload_bytes (2031616) + "
                         "tasks.result_max_bytes (65536) + 65536 for a task record's other fields = 2162688",
                         "a claim or a `status`"):
            self.assertIn(fragment, msg)
        self.assertIn("tasks.result_max_bytes (3145728)", self.error({"redis": {"max_reply_bytes": 4 * MIB},
                                                                      "tasks": {"result_max_bytes": 3 * MIB}}))
        edge = 2 * MIB - 2 * 65536  # exactly fits
        self.assertEqual(self.load({"redis": {"max_reply_bytes": 2 * MIB},
                                    "tasks": {"max_payload_bytes": edge}})["tasks"]["max_payload_bytes"], edge)
        self.load({"tasks": {"max_payload_bytes": settings.MAX_PAYLOAD_BYTES}})  # the largest, at the default bound

    def test_the_reply_bound_holds_a_shared_state_value(self):
        self.assertIn("redis.max_reply_bytes must be 2097152 or more, got 1048576",
                      self.error({"redis": {"max_reply_bytes": MIB}, "tasks": {"max_payload_bytes": 1000}}))

    def test_sentinels_need_master_name(self):
        self.assertIn("redis.sentinels and redis.master_name go together",
                      self.error({"redis": {"sentinels": [{"host": "s1", "port": 26380}]}}))

    def test_bad_node_ids(self):
        cases = [("a:b", "':'"), ("a b", "' '"), ("{a}", "'{', '}'"), ("n\u00fc", "'\u00fc'"),
                 ("x" * 65, "1 to 64 characters"), ("tab\there", "'\\t'"), ("a/b", "'/'")]
        for node_id, fragment in cases:
            with self.subTest(node_id=node_id):
                msg = self.assert_error({"node": {"id": node_id}}, "node.id", fragment)
                if "characters" not in fragment:
                    self.assertIn("use only letters, digits, '.', '_' and '-'", msg)
                env_msg = self.error({}, OPENCLAW_NODE_ID=node_id)
                self.assertIn("environment OPENCLAW_NODE_ID", env_msg)
        self.assertEqual(self.load({"node": {"id": "x" * 64}}).node_id, "x" * 64)
        self.assertEqual(self.load({"node": {"id": "web-01.prod_A"}}).node_id, "web-01.prod_A")

    def test_bad_labels(self):
        self.assert_error({"node": {"labels": ["gpu", "has space"]}}, "node.labels label", "' '")

    def test_port_out_of_range(self):
        for port in (0, 65536, -1):
            with self.subTest(port=port):
                self.assert_error({"redis": {"port": port}}, "redis.port must be a port number from 1 to 65535")
        self.assertIn("environment REDIS_PORT must be a port number from 1 to 65535, got 70000",
                      self.error({}, REDIS_PORT="70000"))
        self.assertIn("environment REDIS_PORT must be a whole number, got 'abc'", self.error({}, REDIS_PORT="abc"))
        self.assertIn("redis.instances[0].port must be a port number",
                      self.error({"redis": {"instances": [{"host": "a", "port": 99999}]}}))

    def test_secret_of_wrong_type_is_not_echoed(self):
        msg = self.error({}, {"redis": {"password": [SECRET]}})
        self.assertIn("redis.password must be a string", msg)
        self.assertNotIn(SECRET, msg)

    def test_endpoint_error_does_not_echo_its_password(self):
        msg = self.error({"redis": {"instances": [{"port": 7000, "password": SECRET}]}})
        self.assertIn("redis.instances[0] must be an object with host and port", msg)
        self.assertNotIn(SECRET, msg)


class UnknownKeyTest(ConfigCase):
    def test_unknown_keys_warn_with_a_suggestion(self):
        cfg = self.load({"node": {"heartbeat_intervall": 5, "id": "n1"}, "nodes": {}, "redis": {"pasword": "x"},
                         "zzz": {}})
        self.assertEqual(cfg["node"]["heartbeat_interval"], 10)  # the typo was ignored, not applied
        text = "\n".join(cfg.warnings)
        self.assertEqual(len(cfg.warnings), 4, text)
        self.assertIn("unknown key 'node.heartbeat_intervall' (ignored; did you mean heartbeat_interval?)", text)
        self.assertIn("unknown section 'nodes' (ignored; did you mean node?)", text)
        self.assertIn("unknown key 'redis.pasword' (ignored; did you mean password?)", text)
        self.assertIn("unknown section 'zzz' (ignored)", text)
        self.assertIn(os.path.join(self.dir, "config.json"), cfg.warnings[0])


class DescribeTest(ConfigCase):
    def test_describe_masks_passwords_and_names_sources(self):
        cfg = self.load({"redis": {"instances": [{"host": "a", "port": 7000, "password": SECRET}]}},
                        {"redis": {"password": SECRET, "sentinel_password": SECRET}}, REDIS_PORT="7005")
        text = cfg.describe()
        self.assertNotIn(SECRET, text)
        self.assertIn("redis.password = ***  (secrets.json)", text)
        self.assertIn("redis.port = 7005  (env REDIS_PORT)", text)
        self.assertIn("node.heartbeat_interval = 10  (default)", text)
        self.assertIn('"password": "***"', text)
        self.assertEqual(len(text.splitlines()), len(config.SCHEMA))
        self.assertIn("redis.username = \"\"  (default)", text)

    def test_print_config_command(self):
        self.write("config.json", {"node": {"id": "pc-node", "heartbeat_interval": 2, "heartbeat_ttl": 6},
                                   "redis": {"socket_timeout": 1, "connect_timeout": 1}, "bogus": {}})
        self.write("secrets.json", {"redis": {"password": SECRET}}, mode=0o644)
        env = dict(os.environ, REDIS_HOST="10.1.2.3", PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([sys.executable, os.path.join(_SCRIPTS, "heartbeat.py"), "--print-config",
                               "--config-dir", self.dir, "--log-dir", os.path.join(self.dir, "logs")],
                              env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn(SECRET, proc.stdout + proc.stderr)
        self.assertIn("redis.password = ***  (secrets.json)", proc.stdout)
        self.assertIn('redis.host = "10.1.2.3"  (env REDIS_HOST)', proc.stdout)
        self.assertIn("node.heartbeat_interval = 2  (config.json)", proc.stdout)
        self.assertIn('node.id = "pc-node"  (config.json)', proc.stdout)
        self.assertIn("warning:", proc.stderr)
        self.assertIn("unknown section 'bogus'", proc.stderr)
        self.assertIn("chmod 600", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "logs", "heartbeat.log")))  # nothing ran


class MaskingTest(ConfigCase):
    """Issue 13 item 12: a password never shows in a config error, whatever the shape of the value."""

    def test_every_shape_of_a_wrong_endpoint_list_is_masked(self):
        shapes = [
            {"redis": {"instances": {"host": "a", "password": SECRET}}},           # an object, not a list
            {"redis": {"sentinels": {"host": "a", "password": SECRET}}},
            {"redis": {"instances": [[{"host": "a", "password": SECRET}]]}},       # a list in the list
            {"redis": {"instances": ["redis://user:%s@a:7000" % SECRET]}},         # a URL string
            {"redis": {"sentinels": "redis://:%s@a:26379" % SECRET}},
            {"redis": {"instances": [{"host": {"password": SECRET}}]}},            # nested deeper
            {"redis": {"instances": [{"host": "a", "port": "x", "auth": {"token": SECRET}}]}},
            {"redis": {"instances": [{"port": 1, "Password": SECRET}]}},          # another spelling
            {"redis": {"sentinels": [{"host": "a", "port": SECRET, "password": SECRET}]}},  # in the wrong field
            {"redis": {"instances": [{"host": 5, "client_secret": SECRET}]}},
        ]
        for cfg in shapes:
            with self.subTest(cfg=cfg):
                msg = self.error(cfg)
                self.assertIn("redis.", msg)
                self.assertNotIn(SECRET, msg)
                self.assertNotIn(SECRET[:8], msg)

    def test_masked_walks_every_shape(self):
        value = {"a": [{"password": SECRET, "x": [{"api_token": SECRET}]}], "url": "redis://u:%s@h:1/0" % SECRET,
                 "secret": 5, "ok": "plain"}
        shown = json.dumps(redact.masked(value))
        self.assertNotIn(SECRET, shown)
        self.assertIn('"ok": "plain"', shown)
        self.assertIn("redis://***@h:1/0", shown)


class HostileJsonTest(ConfigCase):
    """Issue 13 item 14: hostile JSON in config.json is one ConfigError naming the file, never a crash."""

    def test_huge_integer(self):
        msg = self.error('{"node": {"heartbeat_interval": %s}}' % ("9" * 5000))
        self.assertIn(os.path.join(self.dir, "config.json"), msg)
        self.assertIn("digits", msg)
        self.assertLess(len(msg), 300)

    def test_deep_nesting(self):
        for depth in (1000, 100000):
            with self.subTest(depth=depth):
                msg = self.error('{"node": {"labels": %s%s}}' % ("[" * depth, "]" * depth))
                self.assertIn(os.path.join(self.dir, "config.json"), msg)
                self.assertIn("nested", msg)

    def test_duplicate_keys_are_refused(self):
        msg = self.error('{"node": {"heartbeat_interval": 1, "heartbeat_interval": 2}}')
        self.assertIn(os.path.join(self.dir, "config.json"), msg)
        self.assertIn("duplicate key 'heartbeat_interval'", msg)
        msg = self.error('{"node": {}, "node": {}}')
        self.assertIn("duplicate key 'node'", msg)
        msg = self.error({}, '{"redis": {"password": "a", "password": "b"}}')
        self.assertIn(os.path.join(self.dir, "secrets.json"), msg)


class UpperBoundTest(ConfigCase):
    """Issue 13 item 14: every duration has an upper bound, so 1e200 is refused at load time."""

    def test_every_duration_is_bounded(self):
        for (section, key), spec in settings.SCHEMA.items():
            if spec.kind != "num":
                continue
            with self.subTest(key="%s.%s" % (section, key)):
                msg = self.error({section: {key: 1e200}})
                self.assertIn("%s.%s must be at most" % (section, key), msg)

    def test_every_whole_number_is_bounded(self):
        for (section, key), spec in settings.SCHEMA.items():
            if spec.kind != "int":
                continue
            with self.subTest(key="%s.%s" % (section, key)):
                self.assertIn("%s.%s must be at most" % (section, key), self.error({section: {key: 10 ** 12}}))
        self.assertIn("a whole number with 31 digits", self.error({"redis": {"db": 10 ** 30}}))

    def test_the_bounds_themselves_are_accepted(self):
        self.load({"node": {"heartbeat_interval": 3600, "heartbeat_ttl": settings.MAX_DURATION_S},
                   "election": {"lease_ttl": settings.MAX_DURATION_S},
                   "tasks": {"default_timeout_s": settings.SCHEMA[("tasks", "default_timeout_s")].high}})

    def test_environment_values_are_bounded_too(self):
        self.assertIn("environment REDIS_DB must be at most", self.error({}, REDIS_DB="9" * 5000))


class TypoBeforeRelationTest(ConfigCase):
    """Issue 13 item 15: a misspelt key is named before the relation error it causes."""

    def test_relation_error_names_the_typo_first(self):
        msg = self.error({"node": {"heartbeat_intervall": 2, "heartbeat_ttl": 5}})
        typo = msg.find("unknown key 'node.heartbeat_intervall'")
        relation = msg.find("must be at least twice")
        self.assertGreaterEqual(typo, 0, msg)
        self.assertGreater(relation, typo, msg)
        self.assertNotIn("\n", msg)

    def test_print_config_still_shows_the_config(self):
        self.write("config.json", {"node": {"id": "pc", "heartbeat_intervall": 2, "heartbeat_ttl": 5}})
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run([sys.executable, os.path.join(_SCRIPTS, "heartbeat.py"), "--print-config",
                               "--config-dir", self.dir, "--log-dir", os.path.join(self.dir, "logs")],
                              env=env, capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("node.heartbeat_ttl = 5  (config.json)", proc.stdout)
        self.assertIn("node.heartbeat_interval = 10  (default)", proc.stdout)
        self.assertIn("unknown key 'node.heartbeat_intervall'", proc.stderr)
        self.assertIn("config error:", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)

    def test_print_config_still_refuses_a_broken_file(self):
        self.write("config.json", '{"node": {"heartbeat_interval": 1,}}')
        proc = subprocess.run([sys.executable, os.path.join(_SCRIPTS, "heartbeat.py"), "--print-config",
                               "--config-dir", self.dir, "--log-dir", os.path.join(self.dir, "logs")],
                              env=dict(os.environ), capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 2)
        self.assertEqual(proc.stdout, "")
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)


class SettingsRecordTest(ConfigCase):
    """core/settings.py: every setting is a record the loader, the accessors and the docs all read."""

    def test_every_record_has_help_in_both_languages_and_names_its_variable(self):
        for s in settings.SETTINGS:
            with self.subTest(key=s.name):
                self.assertTrue(s.help_en and s.help_zh)
                if s.env:
                    self.assertIn("`%s`" % s.env, s.help_en)
                    self.assertIn("`%s`" % s.env, s.help_zh)
        self.assertEqual(sorted(settings.ENV_OVERRIDES), sorted(
            ["REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "REDIS_USERNAME", "OPENCLAW_NODE_ID", "LOG_LEVEL"]))

    def test_every_number_has_both_bounds(self):
        for s in settings.SETTINGS:
            if s.kind in ("num", "int"):
                with self.subTest(key=s.name):
                    self.assertIsNotNone(s.low)
                    self.assertIsNotNone(s.high)
                    self.assertLessEqual(s.low, s.default)
                    self.assertLessEqual(s.default, s.high)

    def test_a_duration_is_read_in_seconds_by_its_name_or_an_accessor(self):
        """A seed name without its unit (heartbeat_interval) has a ``_s`` accessor returning the value set."""
        values = {"node": {"heartbeat_interval": 3, "heartbeat_ttl": 7, "retry_delay": 0.25},
                  "redis": {"connect_timeout": 1.5, "socket_timeout": 2},
                  "election": {"lease_ttl": 9, "renew_interval": 2.5}}
        cfg = self.load(values)
        suffix = {"s": "_s", "ms": "_ms", "bytes": "_bytes"}
        for s in settings.SETTINGS:
            if s.unit not in suffix or s.key.endswith(suffix[s.unit]):
                continue
            with self.subTest(key=s.name):
                self.assertEqual(s.unit, "s", "a %s setting without its unit in the name" % s.unit)
                self.assertEqual(getattr(cfg, s.key + "_s"), values[s.section][s.key])

    def test_election_accessors_fall_back_to_the_heartbeat(self):
        cfg = self.load({"node": {"heartbeat_interval": 4, "heartbeat_ttl": 12}})
        self.assertEqual((cfg.lease_ttl_s, cfg.renew_interval_s), (12, 4))

    def test_validation_reads_the_record(self):
        """A bound changed in the record is the bound the loader applies and the message names."""
        setting = settings.SCHEMA[("node", "retry_count")]
        with mock.patch.object(setting, "high", 7):
            self.assertIn("node.retry_count must be at most 7, got 8", self.error({"node": {"retry_count": 8}}))
        with mock.patch.object(setting, "low", 2):
            self.assertIn("node.retry_count must be 2 or more, got 1", self.error({"node": {"retry_count": 1}}))

    def test_defaults_module_imports_nothing(self):
        """defaults.py is loaded by every tick through the settings: it must stay constants only."""
        with open(os.path.join(_SCRIPTS, "distnode", "core", "defaults.py"), encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        self.assertEqual([node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))], [])
        for node in tree.body:
            if isinstance(node, ast.Assign):
                with self.subTest(name=node.targets[0].id):
                    self.assertTrue(node.targets[0].id.isupper())


class SettingsDocsTest(unittest.TestCase):
    """The docs' settings reference is generated from the records (python3 -m distnode.core.settings)."""

    def test_docs_hold_exactly_the_generated_reference(self):
        for lang in ("en", "zh"):
            with self.subTest(lang=lang):
                with open(settings.docs_page(lang), encoding="utf-8") as fh:
                    text = fh.read()
                start, end = text.find(settings.BEGIN), text.find(settings.END)
                self.assertTrue(0 <= start < end, "%s lacks the settings markers" % settings.docs_page(lang))
                self.assertEqual(text[start + len(settings.BEGIN):end], "\n" + settings.markdown_reference(lang),
                                 "regenerate: cd scripts && python3 -m distnode.core.settings --update-docs")

    def test_reference_lists_every_setting_with_its_range(self):
        for lang in ("en", "zh"):
            text = settings.markdown_reference(lang)
            for s in settings.SETTINGS:
                self.assertIn("| `%s` |" % s.name, text)
            self.assertIn("| `node.heartbeat_interval` | `10` | %s | > 0, <= 86400 |" % ("s" if lang == "en" else "秒"),
                          text)

    def test_markdown_command(self):
        proc = subprocess.run([sys.executable, "-m", "distnode.core.settings", "--markdown", "zh"], cwd=_SCRIPTS,
                              capture_output=True, text=True, timeout=30)
        self.assertEqual((proc.returncode, proc.stderr), (0, ""))
        self.assertEqual(proc.stdout, settings.markdown_reference("zh"))
        proc = subprocess.run([sys.executable, "-m", "distnode.core.settings", "--bogus"], cwd=_SCRIPTS,
                              capture_output=True, text=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("usage:", proc.stderr)


if __name__ == "__main__":
    unittest.main()
