"""imgbuild's bytecode compiler, run by the image's own interpreter inside the image's root
filesystem (runc, no network, PYTHONHASHSEED=0; see src/python/bytecode.rs).

    python3 compile.py JOB.json          compiles every source of the job, writes its result
    python3 compile.py JOB.json CHUNK    (internal) compiles one chunk of it

The job lists the sources sorted by path. They are cut into fixed chunks of `chunk` sources and
each chunk is compiled, in order, by a fresh interpreter: the output depends only on the job,
never on how many chunks run at once (`workers`) or which finishes first. pycs are PEP 552
hash-based (`invalidation`), one per optimisation level, written where the import system looks
for them (importlib.util.cache_from_source).
"""

import importlib.util
import json
import platform
import py_compile
import subprocess
import sys

MODES = {
    "checked-hash": py_compile.PycInvalidationMode.CHECKED_HASH,
    "unchecked-hash": py_compile.PycInvalidationMode.UNCHECKED_HASH,
}


def compile_chunk(job, sources):
    mode = MODES[job["invalidation"]]
    out = []
    for src in sources:
        pycs, error = [], None
        for level in job["optimize"]:
            cfile = importlib.util.cache_from_source(src, optimization=level or "")
            try:
                py_compile.compile(
                    src, cfile=cfile, dfile=src, doraise=True, optimize=level, invalidation_mode=mode
                )
            except Exception as e:  # a source the interpreter cannot compile: pip skips it too
                text = str(e).strip()
                error = text.splitlines()[-1] if text else type(e).__name__
                break
            pycs.append(cfile)
        out.append({"source": src, "pycs": [] if error else pycs, "error": error})
    return out


def main():
    job_path = sys.argv[1]
    with open(job_path) as f:
        job = json.load(f)
    size = job["chunk"]
    sources = job["sources"]
    if len(sys.argv) > 2:
        i = int(sys.argv[2])
        with open(f"{job['out']}.{i}", "w") as f:
            json.dump(compile_chunk(job, sources[i * size : (i + 1) * size]), f)
        return
    chunks = (len(sources) + size - 1) // size
    todo = list(range(chunks))
    running = []
    failed = []
    while todo or running:
        while todo and len(running) < max(1, job["workers"]):
            i = todo.pop(0)
            cmd = [sys.executable, "-s", "-B", __file__, job_path, str(i)]
            running.append((i, subprocess.Popen(cmd)))
        i, p = running.pop(0)
        if p.wait() != 0:
            failed.append(i)
    if failed:
        sys.exit(f"compiling chunk(s) {failed} failed")
    results = []
    for i in range(chunks):
        with open(f"{job['out']}.{i}") as f:
            results.extend(json.load(f))
    with open(job["out"], "w") as f:
        json.dump(
            {
                "version": platform.python_version(),
                "implementation": sys.implementation.name,
                "cache_tag": sys.implementation.cache_tag,
                "magic": importlib.util.MAGIC_NUMBER.hex(),
                "results": results,
            },
            f,
        )


main()
