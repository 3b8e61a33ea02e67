"""`python die_after.py N <speechcls args>`: the speechcls CLI, SIGKILLed by itself right after its N-th
block is recorded. A real kill -9 at a chosen point, so the kill tests never race a fast machine (a
watcher polling the store lost that race in CI: the run had finished before the kill landed)."""

import os
import signal
import sys

from speechcls.store import writer

after = int(sys.argv.pop(1))
write_block = writer.StoreWriter.write_block
written = 0


def dying(self, *args, **kwargs):
    global written
    write_block(self, *args, **kwargs)
    written += 1
    if written == after:
        os.kill(os.getpid(), signal.SIGKILL)


writer.StoreWriter.write_block = dying

from speechcls.cli import app  # noqa: E402

app(prog_name="speechcls")
