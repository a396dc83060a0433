"""scripts/local_state.py: the node's small local files."""

import os
import tempfile
import threading
import unittest

import support.base  # noqa: F401 - first: puts scripts/ on sys.path
from distnode.core import local_state


class InstanceTokenTest(unittest.TestCase):
    def test_threads_of_one_process_racing_for_a_new_token_all_get_the_one_on_disk(self):
        """The foreground runner starts heartbeat, election and failover threads at once, and each asks for
        the token: they must agree, or the node collides with itself."""
        for _round in range(20):
            with tempfile.TemporaryDirectory() as run_dir:
                barrier, tokens, errors = threading.Barrier(8), [], []

                def ask():
                    barrier.wait()
                    try:
                        tokens.append(local_state.instance_token(run_dir, "n1"))
                    except OSError as exc:
                        errors.append(exc)
                threads = [threading.Thread(target=ask) for _ in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                self.assertEqual(errors, [])
                with open(os.path.join(run_dir, "n1.instance")) as fh:
                    on_disk = fh.read().strip()
                self.assertEqual(set(tokens), {on_disk})
                self.assertEqual(sorted(os.listdir(run_dir)), ["n1.instance"], "no temp file left behind")


if __name__ == "__main__":
    unittest.main()
