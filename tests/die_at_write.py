"""`python die_at_write.py N <speechcls args>`: the speechcls CLI, SIGKILLed by itself just before the N-th
object write to a local store (zarr's LocalStore.set: every chunk and every zarr.json; and the writer's own
file writes of uncompressed chunks, store/writer.py's _write_file). N = 0 counts the
writes instead: the run finishes and prints `writes: <count>` on stderr. The kill-point sweep of store
creation and featurize (tests/test_integrity.py) runs this for every N."""

import atexit
import os
import signal
import sys

from zarr.storage import LocalStore

from speechcls.store import writer

at = int(sys.argv.pop(1))
seen = {"writes": 0}
original = LocalStore.set


async def dying_set(self, key, value):
    seen["writes"] += 1
    if seen["writes"] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return await original(self, key, value)


def dying_write_file(path, parts):
    seen["writes"] += 1
    if seen["writes"] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_write_file(path, parts)


LocalStore.set = dying_set
original_write_file = writer._write_file
writer._write_file = dying_write_file
if at == 0:
    atexit.register(lambda: print(f"writes: {seen['writes']}", file=sys.stderr))

from speechcls.cli import app  # noqa: E402

app(prog_name="speechcls")
