"""Child process of figures 2 and 3: times hubexport's fetch stage in-process.

Usage::

    python benchmarks/fetch_child.py SPEC_DIR NAME CACHE_DIR MIRROR OUT_JSON [PROFILE_OUT]

Calls :func:`hubexport.fetch.fetch_tarball` (the download-and-verify part of
``hubexport fetch``) once and writes JSON to OUT_JSON:

  seconds      wall time of the call (s)
  fsync        seconds spent in os.fsync during the call
  io           deltas of /proc/self/io over the call (rchar: bytes passed
               through read syscalls on files -- socket receives are not
               counted -- and read_bytes: bytes fetched from the block device)
  cpu          CPU time (user + system, all threads) of this process
               over the call (s)
  size         bytes of the resulting tarball

requests and urllib3 are imported before the call (fetch imports them only
to download): the figures are the stage's own work, imports are start-up.
With an empty cache this is a download (bytes hashed while they stream in);
with the tarball already cached it is the verification path (size check,
then one hash pass over the file). With PROFILE_OUT, the call runs under
cProfile and the top entries by own time are written there as text.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time


def _io():
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}


def main(argv):
    spec_dir, name, cache_dir, mirror, out_json = argv[1:6]
    profile_out = argv[6] if len(argv) > 6 else None

    from hubexport import fetch
    from hubexport.specs import load_specs

    spec = load_specs(spec_dir)[name]
    fsync_time = [0.0]
    real_fsync = os.fsync

    def timed_fsync(fd):
        t = time.perf_counter()
        try:
            return real_fsync(fd)
        finally:
            fsync_time[0] += time.perf_counter() - t

    os.fsync = timed_fsync
    # fetch imports requests/urllib3 only when it downloads; import them here, before
    # the clock starts, so that the stage's figures are the download alone (the CLI
    # figures include every import).
    fetch._http()
    profiler = cProfile.Profile() if profile_out else None
    before = _io()
    cpu_start = time.process_time()
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    path = fetch.fetch_tarball(spec, cache_dir=cache_dir, mirror=mirror, progress=False)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    after = _io()
    if profiler:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(10)
        text = buf.getvalue()
        start_at = text.find("   ncalls")
        with open(profile_out, "w") as f:
            f.write(text[start_at:] if start_at >= 0 else text)
    with open(out_json, "w") as f:
        json.dump({"seconds": seconds, "fsync": fsync_time[0], "cpu": cpu,
                   "io": {k: after[k] - before[k] for k in after},
                   "size": os.path.getsize(path)}, f)


if __name__ == "__main__":
    main(sys.argv)
