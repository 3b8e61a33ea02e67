"""Overlap: a background thread filling a bounded queue (ffcv's way), and host -> CUDA copies on a side
stream one batch ahead (timm's PrefetchLoader)."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

import torch


def background(items: Iterator, maxsize: int = 4, name: str = "speechcls-reader") -> Iterator:
    """`items` produced by a daemon thread into a bounded queue; an exception there is raised here, and
    a consumer that stops early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # surfaces in the consumer instead of hanging it
            q.put(e)

    thread = threading.Thread(target=produce, daemon=True, name=name)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def to_device(batches: Iterator[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> Iterator:
    """Host batches on `device`. On CUDA each copy runs `non_blocking` on a side stream one batch ahead,
    and the compute stream waits for it (the source must be pinned for the copy to overlap)."""
    if device.type != "cuda":
        yield from ((x.to(device), y.to(device)) for x, y in batches)
        return
    stream = torch.cuda.Stream(device=device)
    pending = None
    for x, y in batches:
        with torch.cuda.stream(stream):
            nxt = (x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        if pending is not None:
            yield pending
        torch.cuda.current_stream(device).wait_stream(stream)
        for t in nxt:
            t.record_stream(torch.cuda.current_stream(device))  # the copy's memory is used there
        pending = nxt
    if pending is not None:
        yield pending
