"""`python die_at_write.py N <speechcls args>`: the speechcls CLI, SIGKILLed by itself just before the N-th
object write to a local store (zarr's LocalStore.set: every chunk and every zarr.json). N = 0 counts the
writes instead: the run finishes and prints `writes: <count>` on stderr. The kill-point sweep of store
creation and featurize (tests/test_integrity.py) runs this for every N."""

import atexit
import os
import signal
import sys

from zarr.storage import LocalStore

at = int(sys.argv.pop(1))
seen = {"writes": 0}
original = LocalStore.set


async def dying_set(self, key, value):
    seen["writes"] += 1
    if seen["writes"] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return await original(self, key, value)


LocalStore.set = dying_set
if at == 0:
    atexit.register(lambda: print(f"writes: {seen['writes']}", file=sys.stderr))

from speechcls.cli import app  # noqa: E402

app(prog_name="speechcls")
