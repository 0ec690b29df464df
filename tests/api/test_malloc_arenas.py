"""``api.malloc_arenas``: the app limits glibc's malloc arenas before its threads start (issue 14: memory per worker)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    from api.app import create_app
    from operators.settings import Settings

    libc = ctypes.CDLL(None)
    libc.fdopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]

    def arenas():
        with tempfile.TemporaryFile() as f:
            stream = libc.fdopen(os.dup(f.fileno()), b"w")
            libc.malloc_info(0, stream)
            libc.fclose(stream)
            f.seek(0)
            return f.read().decode().count("<heap nr=")

    create_app(Settings(api={"malloc_arenas": int(sys.argv[1]), "require_keys": False}))
    before = arenas()  # the main arena, and any a library's native thread took while importing

    def churn():
        kept = [bytearray(4096) for _ in range(2000)]  # past pymalloc: glibc malloc on this thread's arena
        del kept

    threads = [threading.Thread(target=churn) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(before, arenas())
""")


def _arenas(limit: int) -> tuple[int, int]:
    """Arenas of a process that made the app with ``malloc_arenas=limit``: before and after 6 threads allocated."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MALLOC_ARENA_MAX", None)
    out = subprocess.run([sys.executable, "-c", _PROBE, str(limit)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=True).stdout
    before, after = map(int, out.split()[-2:])
    return before, after


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_info"), reason="glibc only")
def test_threads_share_the_arenas_the_setting_allows() -> None:
    before, after = _arenas(1)
    assert after == before  # the threads share the arenas there were (one, or the few native threads took at import)
    before, after = _arenas(0)
    assert after > before  # glibc's default: the threads get arenas of their own


_FRAGMENT = textwrap.dedent("""
    import re, sys
    from api.app import create_app
    from operators.settings import Settings

    def rss_mb():
        return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

    mmap_bytes, trim_bytes = map(int, sys.argv[1:3])
    create_app(Settings(api={"malloc_mmap_threshold_bytes": mmap_bytes, "malloc_trim_threshold_bytes": trim_bytes,
                             "require_keys": False}))
    big = bytearray(16 << 20)  # freed: glibc's default then serves blocks up to 16 MB from the heap
    del big
    before = rss_mb()
    temporaries, kept = [], []
    for _ in range(40):  # 2 MB temporaries between long-lived small blocks (as numpy temporaries between objects)
        temporaries.append(bytearray(2 << 20))
        kept.append(bytearray(64 << 10))
    del temporaries
    print(rss_mb() - before)
""")


def _rss_left_mb(mmap_bytes: int, trim_bytes: int) -> float:
    """MB of RSS a process that made the app with these thresholds keeps after freeing 80 MB of 2 MB temporaries."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _FRAGMENT, str(mmap_bytes), str(trim_bytes)], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120, check=True).stdout
    return float(out.split()[-1])


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_info"), reason="glibc only")
def test_freed_temporaries_leave_the_process_with_fixed_thresholds() -> None:
    from operators.settings import ApiSettings

    a = ApiSettings()
    assert _rss_left_mb(a.malloc_mmap_threshold_bytes, a.malloc_trim_threshold_bytes) < 20  # the defaults: mapped, unmapped
    assert _rss_left_mb(0, 0) > 60  # glibc's own: in the heap between the kept blocks, still resident
