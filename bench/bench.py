#!/usr/bin/env python3
"""imgbuild benchmarks against named peers (issue 7). One driver, one output format.

Every figure is the median, min and max of >= 5 runs; every comparison is a ratio measured pair
by pair (peer time / imgbuild time of the same round, so > 1 means imgbuild is faster), and the
median of those per-pair ratios is what the report quotes. Writes markdown (stdout and --md FILE)
and JSON (--json FILE). With --only, the sections not run are kept from an existing --json file,
so a section can be re-measured alone and the report stays whole.

Usage: bench/bench.py [--runs N] [--only SECTION,...] [--md BENCHMARKS.md] [--json bench/results.json]
                      [--note TEXT] [--perf] [--keep] [--no-install] [--render]
Sections (each runnable alone):
  layers    layer throughput at equal settings: imgbuild gzip level 6 vs tar|pigz -p2 -6 and tar|gzip -6,
            level 5 (its default) vs tar|pigz -p2 -5, zstd -3 vs tar|zstd -3 -T2, on a ~150 MB tree of many small
            files and on one 500 MB file; output sizes, CPU time and the 2-core bound (CPU / 2) of each
  api       the fixture api image: imgbuild vs `uv pip install --target` + tar|pigz -p2 -5, and vs
            `buildah bud --layers --isolation chroot` (overlay storage) of bench/api.Dockerfile:
            cold (empty layer cache, warm wheel cache), no-op and one-file-change rebuilds
  rebuilds  imgbuild rebuilds of the api image: no-op, one app file changed, one dependency bumped
  push      imgbuild push vs skopeo copy oci:… docker://… to a loopback docker-registry: fresh,
            unchanged, one layer changed (time and bytes)
  memory    peak RSS of the whole imgbuild process: a 200 MB layer (gzip, zstd), the api build
  scaling   build time, peak RSS and no-op rebuild time for site-packages of ~50, ~200, ~800 MB; no-op
            rebuilds of trees of 1k, 10k and 100k small files (time per unchanged file)
  sharedcache  fresh runners with the shared cache (issue 17): runner B's build+push vs runner A's cold one and
            vs B without the cache, bytes each way, and through a proxy faulting 10 % of the cache's requests
  corpus    the real-world corpus (tests/corpus; data from tests/corpus/fetch-data.py, --sources for the
            projects' own trees): per project packages, sdists built, cold build, layer size, rebuild; the
            largest lock with sdists: imgbuild cold vs `uv pip install --target` (uv builds the same sdists)
            + tar|pigz -p2 -5; IMGBUILD_BENCH_CORPUS=a,b limits the projects
  sbom      the api image built cold with its SBOM and provenance vs with `sbom = false` and
            `provenance = false` (the same imgbuild, the peer being the opted-out build); their sizes
  bytecode  `bytecode = true`: runc start to `import fastapi, sqlalchemy, alembic, celery` as user 1000
            on a read-only root, with and without pycs (>= 10 runs each); cold build cost of compiling
            vs `uv pip install --target --compile-bytecode`

--perf adds a `perf record` profile (top symbols, per-thread split) of one imgbuild gzip build per
layers input and of one cold api build. --render re-renders --md from --json without measuring.

Environment: IMGBUILD (the binary; default target/release/imgbuild), UV (a uv binary), IMGBUILD_BENCH_CACHE,
IMGBUILD_FIXTURE_CACHE (the debootstrap tarball), IMGBUILD_BENCH_NOTE (default --note),
IMGBUILD_BENCH_PUSH_MIB (data layer of the push image, default 64), IMGBUILD_BENCH_BUILDAH_DRIVER
(default overlay; vfs where overlay cannot work, and the report says so).

Needs a release build (`cargo build --release`). Peers missing from PATH are installed with
apt-get (pigz zstd buildah skopeo runc docker-registry busybox-static debootstrap), uv with pip
into a temporary venv (or set UV=/path/to/uv). Inputs that cost time to make are cached per
machine under ~/.cache/imgbuild-bench (IMGBUILD_BENCH_CACHE) and ~/.cache/imgbuild-fixtures.
Servers listen on 127.0.0.1 only and are stopped by PID; everything else lives in a temporary
directory removed at the end (--keep keeps it).
"""
import argparse, atexit, glob, json, os, platform, random, shlex, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, traceback, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMGBUILD = os.environ.get("IMGBUILD", str(ROOT / "target/release/imgbuild"))
CACHE = Path(os.environ.get("IMGBUILD_BENCH_CACHE", Path.home() / ".cache/imgbuild-bench"))
EPOCH = "1700000000"
T0 = time.monotonic()

# Targets of issue 7 (and issue 4 for the fresh push).
TARGET = {
    "gzip_vs_pigz": 2.0, "zstd_vs_cli": 1.2, "api_vs_uv": 1.5, "api_vs_buildah": 5.0,
    "noop_s": 0.100, "onefile_s": 0.300, "unchanged_push_frac": 0.2, "rss_mib": 64.0, "push_vs_skopeo": 1.0,
    # Issue 18: at equal settings (gzip level 6 on both sides; zstd level 3 with 2 threads).
    "gzip_tree_18": 1.8, "gzip_big_18": 1.25, "zstd_tree_18": 0.95, "noop_us_per_file": 3.0,
}
# The gzip level of every equal-level comparison: pigz's and gzip's default.
GZ_EQUAL = 6
# imgbuild's default gzip level (compress::DEFAULT_GZIP_LEVEL), compared with pigz at the same level.
GZ_DEFAULT = 5
# Previously measured on this machine kind (issue 7), for the buildah rows.
BUILDAH_BEFORE = {"cold": 7.8, "no-op": 2.2, "one-file change": 3.6}


def log(msg):
    print(f"bench [{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Running and measuring commands

class Run:
    """One timed command: wall seconds, peak RSS (MiB) of the process (its waited-for
    descendants included), stdout when captured, and whatever the section attaches."""

    def __init__(self, seconds, rss_mib, out="", cpu=None):
        self.seconds, self.rss_mib, self.out, self.cpu = seconds, rss_mib, out, cpu
        self.bytes = None
        self.json = None


TIME = "/usr/bin/time"


def run(cmd, cwd=None, env=None, capture=False):
    """Runs cmd (argv list, or a bash pipeline string with pipefail): wall time around the process,
    peak RSS from wait4's rusage. The rusage is taken by GNU time (its own wait4), not by this
    process: a child that Python starts (vfork + exec) inherits the interpreter's peak RSS as its
    ru_maxrss floor, so os.wait4 here would report at least this driver's peak (~100+ MiB after
    making the inputs). GNU time is ~1 MiB, and what it forks starts from that."""
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    timed = Path(TIME).exists()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as ru:
        full = [TIME, "-f", "%M %U %S", "-o", ru.name] + argv if timed else argv
        t0 = time.perf_counter()
        p = subprocess.Popen(full, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                             stdout=out if capture else subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise BenchError(f"command failed ({p.returncode}): {shlex.join(argv)}\n{err.read().decode(errors='replace')[-4000:]}")
        text = ""
        if capture:
            out.seek(0)
            text = out.read().decode(errors="replace")
        kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
        if timed:
            lines = [l for l in Path(ru.name).read_text().splitlines() if l.strip()]
            k, u, sy = lines[-1].split()
            kib, cpu = int(k), float(u) + float(sy)
        r = Run(dt, kib / 1024, text, cpu)
        if capture:
            err.seek(0)
            r.err = err.read().decode(errors="replace")
        return r


def sh(cmd, cwd=None, env=None, check=True):
    """A setup command (not timed); its output is shown only when it fails."""
    argv = ["bash", "-o", "pipefail", "-c", cmd] if isinstance(cmd, str) else [str(c) for c in cmd]
    p = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise BenchError(f"setup command failed ({p.returncode}): {shlex.join(argv)}\n{(p.stdout + p.stderr)[-4000:]}")
    return p


def imgbuild_json(r):
    """The last --json summary line of an imgbuild run."""
    lines = [l for l in r.out.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def stats(xs):
    xs = list(xs)
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


def rounds(steps, runs, warmup=True):
    """Runs each step once per round, in order, for runs rounds (plus an untimed warm-up round).
    steps: [(key, fn(round) -> Run)]. Returns {key: [Run]} in round order, so that index i of two
    keys is a pair measured in the same round."""
    res = {k: [] for k, _ in steps}
    total = runs + (1 if warmup else 0)
    for i in range(total):
        got = [(k, fn(i)) for k, fn in steps]
        if not (warmup and i == 0):
            for k, r in got:
                res[k].append(r)
        log(f"  round {i + 1}/{total}" + (" (warm-up)" if warmup and i == 0 else "") + ": "
            + ", ".join(f"{k} {fmt_s(r.seconds)}" for k, r in got))
    return res


def ratios(num, den):
    """Per-pair ratios num[i] / den[i] (times)."""
    return [a.seconds / b.seconds for a, b in zip(num, den)]


def secs(rs):
    return stats(r.seconds for r in rs)


def rss(rs):
    return stats(r.rss_mib for r in rs)


def cpu(rs):
    return stats(r.cpu for r in rs)


def bound(rs, cores=2):
    """The 2-core bound of a run: its CPU time (user + system of every process and thread, from
    wait4's rusage of the children) divided by the cores, the best wall time that work allows;
    and wall / bound per run (1.00: every core busy from start to end). Medians."""
    b = stats(r.cpu / cores for r in rs)
    w = stats(r.seconds / (r.cpu / cores) if r.cpu else float("nan") for r in rs)
    return b, w


def bound_cells(rs):
    b, w = bound(rs)
    return [fmt_s(b["median"]), f"{w['median']:.2f}"]


BOUND_HEADER = ["2-core bound (CPU / 2)", "wall / bound"]
BOUND_NOTE = ("2-core bound = CPU time / 2, the shortest wall time the same work could take on this machine's 2 cores; "
              "wall / bound = 1.00 means both cores were busy from start to end, 2.00 one core only.")


# ---------------------------------------------------------------------------------------------
# Formatting

def fmt_s(sec):
    return f"{sec * 1000:.1f} ms" if sec < 1 else f"{sec:.2f} s"


def fmt_b(n):
    if n is None:
        return "—"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n} B"


def fmt_x(st):
    return f"**{st['median']:.2f}×** ({st['min']:.2f}–{st['max']:.2f})"


def time_cells(st):
    return [fmt_s(st["median"]), fmt_s(st["min"]), fmt_s(st["max"]), str(st["runs"])]


TIME_HEADER = ["median", "min", "max", "runs"]


class Section:
    def __init__(self, key, title, intro):
        self.key = key
        self.d = {"title": title, "intro": intro, "tables": [], "targets": [], "results": {}, "notes": []}

    def table(self, title, header, rows, note=""):
        self.d["tables"].append({"title": title, "note": note, "header": header, "rows": rows})

    def target(self, what, measured, met):
        self.d["targets"].append({"target": what, "measured": measured, "met": bool(met)})

    def note(self, text):
        self.d["notes"].append(text)

    def result(self, key, value):
        self.d["results"][key] = value


def esc(cell):
    return str(cell).replace("|", "\\|")


def render(report):
    out = ["# imgbuild benchmarks", "",
           "Generated by `just bench` (`bench/bench.py`). Each figure is the median (min, max) of the runs shown; "
           "each ratio is the median (min–max) of per-pair ratios, peer time / imgbuild time, measured in the same run "
           "(> 1: imgbuild is faster). Raw figures: `bench/results.json`.", ""]
    if report.get("note"):
        out += [f"> {report['note']}", ""]
    secs_ = report["sections"]
    rows = []
    for key in SECTION_ORDER:
        s = secs_.get(key)
        if not s:
            continue
        for t in s.get("targets", []):
            rows.append(f"| {esc(t['target'])} | {esc(t['measured'])} | {'met' if t['met'] else '**not met**'} | {key} |")
    if rows:
        out += ["## Targets", "", "| target | measured | | section |", "|---|---|---|---|"] + rows + [""]
    for key in [k for k in SECTION_ORDER if k in secs_]:
        n = SECTION_ORDER.index(key) + 1
        s = secs_[key]
        m = s.get("machine", {})
        out += [f"## {n}. {s['title']}", "", s["intro"], "",
                f"_Section `{key}`: {s.get('generated', '?')}, {m.get('cpus', '?')} CPUs, load average {m.get('load', '?')} at start; "
                f"imgbuild {s.get('imgbuild', '?')}; took {s.get('wall_s', 0):.0f} s._", ""]
        if s.get("error"):
            out += ["**This section failed:**", "", "```", s["error"].strip(), "```", ""]
        for t in s["tables"]:
            out += [f"### {t['title']}", ""]
            if t.get("note"):
                out += [t["note"], ""]
            out.append("| " + " | ".join(esc(h) for h in t["header"]) + " |")
            out.append("|" + "|".join("---" if i == 0 or not h else "---:" for i, h in enumerate(t["header"])) + "|")
            for r in t["rows"]:
                out.append("| " + " | ".join(esc(c) for c in r) + " |")
            out.append("")
        if s.get("targets"):
            out += ["Targets:", ""]
            for t in s["targets"]:
                out.append(f"- {t['target']}: {t['measured']} — {'met' if t['met'] else '**not met**'}")
            out.append("")
        for note in s.get("notes", []):
            out += [note, ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Peers and inputs

DEBS = {"pigz": "pigz", "zstd": "zstd", "buildah": "buildah", "skopeo": "skopeo", "runc": "runc",
        "docker-registry": "docker-registry", "busybox": "busybox-static", "debootstrap": "debootstrap",
        "tar": "tar", "gzip": "gzip", "time": "time", "umoci": "umoci"}
NEEDS = {"layers": ["pigz", "zstd", "tar", "gzip"], "api": ["pigz", "buildah", "skopeo", "runc", "debootstrap"],
         "rebuilds": ["debootstrap"], "push": ["skopeo", "docker-registry", "busybox"], "memory": ["debootstrap"],
         "scaling": [], "downloads": ["pigz", "runc", "debootstrap"], "corpus": ["pigz", "runc", "debootstrap"], "sbom": ["debootstrap"], "debian": ["debootstrap", "skopeo", "buildah"],
         "bytecode": ["runc", "umoci", "debootstrap"], "sharedcache": ["docker-registry", "debootstrap"],
         "platforms": ["debootstrap", "skopeo", "buildah"]}


def apt_install(pkgs):
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + pkgs
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
        sh(sudo + ["apt-get", "update", "-q"], env=env)
        sh(cmd, env=env)


def ensure_peers(sections, install):
    tools = sorted({t for s in sections for t in NEEDS[s]})
    tools.append("time")  # GNU time: peak RSS of the measured process (see run())
    missing = [t for t in tools if not (Path(TIME).exists() if t == "time" else shutil.which(t))]
    if not missing:
        return
    if not install:
        raise BenchError(f"missing tools: {' '.join(missing)} (apt-get install {' '.join(DEBS[t] for t in missing)})")
    pkgs = [DEBS[t] for t in missing]
    log(f"installing Debian packages: {' '.join(pkgs)}")
    apt_install(pkgs)


def warm(path):
    """Reads every file under path (page cache), as the ENGINEERING notes ask before timing."""
    path = Path(path)
    for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


def du(path):
    files = [p for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink() and p.name != ".done"]
    return sum(p.stat().st_size for p in files), len(files)


def rmtree(p):
    shutil.rmtree(p, ignore_errors=True)


class Ctx:
    """What sections share within one invocation: the work directory, uv, the api fixture."""

    def __init__(self, runs, work, install, perf):
        self.runs, self.work, self.install, self.perf = runs, Path(work), install, perf
        self._uv = None
        self._fixture = None

    def uv(self):
        if self._uv:
            return self._uv
        uv = os.environ.get("UV") or shutil.which("uv")
        if not uv:
            venv = self.work / "uv-venv"
            log("installing uv with pip into a temporary venv")
            if subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True).returncode != 0:
                if self.install and shutil.which("apt-get"):
                    apt_install(["python3-venv"])
                rmtree(venv)
                sh(["/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable, "-m", "venv", venv])
            sh([venv / "bin/python", "-m", "pip", "install", "-q", "uv"])
            uv = str(venv / "bin/uv")
        self._uv = uv
        return uv

    def uv_env(self):
        return dict(os.environ, UV=self.uv(), UV_CACHE_DIR=str(self.work / "uv-cache"), UV_NO_PROGRESS="1")

    def fixture(self):
        if not self._fixture:
            self._fixture = Fixture(self)
        return self._fixture


def tree(ctx):
    """~150 MB of many small files: numpy and pandas (and friends) installed with bytecode, cached."""
    t = CACHE / "tree"
    if not (t / ".done").exists():
        log("making the ~150 MB tree (numpy, pandas) under " + str(CACHE))
        rmtree(t)
        py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        sh([ctx.uv(), "pip", "install", "--quiet", "--no-deps", "--compile-bytecode", "--python", py, "--target", t,
            "numpy==2.4.6", "pandas==3.1.1", "python-dateutil==4.0.0", "six==1.17.0", "tzdata==2026.6"], env=ctx.uv_env())
        (t / ".done").write_text("")
    return t


def bigfile():
    """One ~500 MB file of mixed content (deterministic); the directory holding it."""
    f = CACHE / "big" / "blob.bin"
    if not f.exists():
        log("making the 500 MB file under " + str(CACHE))
        f.parent.mkdir(parents=True, exist_ok=True)
        r = random.Random(42)
        chunk = bytes(r.getrandbits(8) for _ in range(1 << 16))
        tmp = f.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for i in range(500 * 16):
                out.write(chunk[: 1 << 15])
                out.write((b"the quick brown fox %08d jumps\n" % i) * 1024)
        tmp.rename(f)
    return f.parent


def scaled_tree(ctx, mb):
    """A site-packages-like tree of ~mb MB: the files of tree() copied (real copies, no links)
    under renamed top-level packages (numpy, numpy_1, …) until the size is reached. Cached."""
    d = CACHE / "scaling" / f"sp{mb}"
    spec = f"v2 {mb} MB from {tree(ctx)}"
    if (d / ".done").exists() and (d / ".done").read_text() == spec:
        return d
    src = tree(ctx)
    log(f"making the ~{mb} MB site-packages tree under {d.parent}")
    tmp = d.with_name(d.name + ".tmp")
    rmtree(tmp)
    rmtree(d)
    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.is_symlink() and p.name != ".done")
    total, k, want = 0, 0, mb * 1_000_000
    while total < want * 0.99:
        added = 0
        for f in files:
            size = f.stat().st_size
            if total + size > want * 1.01:
                continue  # a file that would overshoot (numpy's bundled OpenBLAS is ~30 MB)
            rel = f.relative_to(src)
            parts = list(rel.parts)
            if k:  # another copy: numpy -> numpy_1, six.py -> c1_six.py
                parts[0] = f"{parts[0]}_{k}" if len(parts) > 1 else f"c{k}_{parts[0]}"
            dst = tmp.joinpath(*parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
            total += size
            added += 1
            if total >= want * 0.99:
                break
        k += 1
        if not added:
            break
    (tmp / ".done").write_text(spec)
    tmp.rename(d)
    return d


def many_files(n):
    """A tree of n small files (0.5 to 4 kB each, deterministic text), 100 to a directory, like a
    large source tree or site-packages by file count rather than bytes. Cached."""
    d = CACHE / "files" / f"n{n}"
    spec = f"v1 {n} files"
    if (d / ".done").exists() and (d / ".done").read_text() == spec:
        return d
    log(f"making a tree of {n} small files under {d.parent}")
    tmp = d.with_name(d.name + ".tmp")
    rmtree(tmp)
    rmtree(d)
    r = random.Random(n)
    words = [b"import", b"def", b"return", b"self", b"value", b"class", b"None", b"data", b"for", b"in"]
    for i in range(n):
        sub = tmp / f"pkg{i // 1000:03d}" / f"mod{(i // 100) % 10}"
        if i % 100 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        body = b" ".join(r.choice(words) for _ in range(r.randint(80, 700)))
        (sub / f"f{i:06d}.py").write_bytes(b"# %d\n" % i + body + b"\n")
    (tmp / ".done").write_text(spec)
    tmp.rename(d)
    return d


# The host libraries the ELF files of the numpy/pandas tree need: the base of the layer projects,
# so that the native-library check (every DT_NEEDED resolvable in the image) passes on them.
HOST_LIBS = ["libc.so.6", "libm.so.6", "libz.so.1", "libgcc_s.so.1", "libstdc++.so.6", "libpthread.so.0", "ld-linux-x86-64.so.2"]


def libs_base(ctx):
    """An OCI layout of a small base holding HOST_LIBS (copied from the host) and the libraries numpy
    bundles (its `numpy.libs`) in /lib and /usr/lib, the loader in /lib64: what the tree's extension
    modules load, also from the scaled trees' renamed copies (where `$ORIGIN` paths no longer lead to
    a `numpy.libs`). Made once per invocation."""
    d = ctx.work / "libs-base"
    if (d / "oci").exists():
        return d / "oci"
    root = d / "rootfs"
    host = next((Path(p) for p in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")
                 if all((Path(p) / l).exists() for l in HOST_LIBS)), None)
    if host is None:
        raise BenchError(f"host libraries not found: {' '.join(HOST_LIBS)}")
    for sub in ("lib", "usr/lib", "lib64"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for lib in HOST_LIBS:
        for sub in ("lib", "usr/lib"):
            shutil.copyfile(host / lib, root / sub / lib)
    shutil.copyfile(host / "ld-linux-x86-64.so.2", root / "lib64/ld-linux-x86-64.so.2")
    for lib in sorted((tree(ctx) / "numpy.libs").iterdir()):
        shutil.copyfile(lib, root / "usr/lib" / lib.name)
    sh([IMGBUILD, "-q", "base", "import", root, "--output", f"oci:{d / 'oci'}:libs"],
       env=dict(os.environ, SOURCE_DATE_EPOCH=EPOCH))
    return d / "oci"


# What a layer project's cold build keeps of its store: the base's blobs and the facts learnt from
# it (a base seen before, as in the api section); the layer cache, stat cache and output go.
LAYER_KEEP = {"blobs", "tmp", ".lock", "python-target", "sbom-layer-v1"}


class LayerProject:
    """One layer of `src` on a small base of host libraries (`libs_base`). imgbuild reads only inside
    its project, so the configs sit next to src (in the bench cache); the store and output layout are
    in the work directory. A cold build (`fresh`) empties the layer and stat caches and keeps what the
    store knows of the base."""

    def __init__(self, ctx, src, name):
        self.src = Path(src)
        self.root = self.src.parent
        self.work = ctx.work / name
        self.work.mkdir(parents=True, exist_ok=True)
        base = libs_base(ctx)
        self.cfg = {}
        for comp in ("gzip", "zstd"):
            cfg = self.root / f"bench-{self.src.name}-{comp}.toml"
            text = (f'[defaults]\ncompression = "{comp}"\nplatform = "linux/amd64"\n'
                    f'[images.t]\nbase = "oci:{base}:libs"\n[[images.t.layers]]\nname = "tree"\n'
                    f'files = [{{ from = "{self.src.name}", to = "/t" }}]\n')
            if not cfg.exists() or cfg.read_text() != text:
                cfg.write_text(text)
            self.cfg[comp] = cfg
        self.env = dict(os.environ, IMGBUILD_CACHE=str(self.work / "store"), SOURCE_DATE_EPOCH=EPOCH)

    def fresh(self):
        store = self.work / "store"
        if store.exists():
            for p in store.iterdir():
                # Listings by diff_id: the base's kept, the built layer's would be rewritten anyway.
                if p.name not in LAYER_KEEP and not p.name.startswith("listings-"):
                    rmtree(p) if p.is_dir() else p.unlink()
        rmtree(self.work / "oci")
        rmtree(self.root / ".imgbuild")

    def argv(self, comp, level=None, json_=True):
        lv = ["--gzip-level", str(level)] if level and comp == "gzip" else []
        return ([IMGBUILD, "-q", "--config", self.cfg[comp], "build", "t"] + (["--json"] if json_ else []) + lv
                + ["--output", f"oci:{self.work / 'oci'}:t"])

    def build(self, comp, fresh=True, level=None):
        if fresh:
            self.fresh()
        r = run(self.argv(comp, level), cwd=self.root, env=self.env, capture=True)
        r.json = imgbuild_json(r)
        r.bytes = r.json["layers"][0]["size"]
        return r


# The store's contents a cold build keeps: blobs (wheels among them) and the wheel records.
# Everything else (layer cache, stat cache, listings, python targets, roots) is removed.
WHEEL_CACHE = {"blobs", "python-wheels", "python-index", "tmp", ".lock"}
# What the store remembers about a base it has seen (its file listing, the detected Python target,
# what the SBOM reads of its layers: METADATA, dpkg status):
# kept by a "cold" build (the layer cache is what is emptied), wiped by a first build on the base.
BASE_FACTS = {"listings-v4", "python-target", "sbom-layer-v1"}


def prune_store(store, keep, blobs=None):
    """Removes from the store every entry whose name is not in `keep`; with `blobs` (a set of
    names), also every blob not named in it."""
    if not store.exists():
        return
    for p in store.iterdir():
        if p.name == "blobs" and blobs is not None:
            for f in (p / "sha256").iterdir():
                if f.name not in blobs:
                    f.unlink()
        elif p.name not in keep:
            rmtree(p) if p.is_dir() else p.unlink()


class Fixture:
    """fixtures/job-agent in the work directory: its uv.lock (make-lock.sh), the Debian python
    base (make-debian-python.sh --import), the exported requirements for the uv peer."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = ctx.work / "api"
        self.project = self.dir / "job-agent"
        self.store = self.dir / "store"
        self.base = self.dir / ".bases" / "debian-python3"
        rmtree(self.dir)
        self.dir.mkdir(parents=True)
        shutil.copytree(ROOT / "fixtures/job-agent", self.project,
                        ignore=shutil.ignore_patterns(".venv", "uv.lock", "__pycache__", ".imgbuild", "*.pyc"))
        log("api fixture: uv.lock (make-lock.sh), Debian python base (make-debian-python.sh --import)")
        env = ctx.uv_env()
        sh([self.project / "make-lock.sh", "--force"], env=env)
        sh([ROOT / "fixtures/base/make-debian-python.sh", "--import", f"{self.base}:bookworm"],
           env=dict(os.environ, IMGBUILD=IMGBUILD))
        self.requirements = self.dir / "requirements.txt"
        sh([ctx.uv(), "export", "--quiet", "--frozen", "--no-emit-project", "-o", self.requirements], cwd=self.project, env=env)
        self.env = dict(os.environ, IMGBUILD_CACHE=str(self.store), SOURCE_DATE_EPOCH=EPOCH)
        self.main = self.project / "src/main.py"
        self.main_text = self.main.read_text()
        self.lock = self.project / "uv.lock"
        self.lock_text = self.lock.read_text()
        self._bumped = None
        self.packages = sum(1 for l in self.requirements.read_text().splitlines() if "==" in l)

    def build(self):
        r = run([IMGBUILD, "-q", "build", "api", "--json"], cwd=self.project, env=self.env, capture=True)
        r.json = imgbuild_json(r)
        r.bytes = sum(l["size"] for l in r.json.get("layers", []))
        return r

    def cold(self, first_on_base=False):
        """Empty layer cache and output layout, warm wheel cache; with `first_on_base`, the
        store also forgets what it learnt from the base."""
        prune_store(self.store, WHEEL_CACHE if first_on_base else WHEEL_CACHE | BASE_FACTS)
        rmtree(self.project / ".imgbuild")

    def steps_with(self, toml):
        """Round steps that build with imgbuild.toml set to a text: (cold(text), noop(text))."""
        def cold(text):
            def step(i):
                toml.write_text(text)
                self.cold()
                return self.build()
            return step

        def noop(text):
            def step(i):
                toml.write_text(text)
                return self.build()
            return step
        return cold, noop

    def change(self, i):
        self.main.write_text(self.main_text + f"\n# bench: one-file change {i} {time.time_ns()}\n")

    def restore(self):
        self.main.write_text(self.main_text)
        self.lock.write_text(self.lock_text)

    BUMP = ("idna", "3.20", "3.10")

    def bumped_lock(self):
        """uv.lock with one pin changed: make-lock.sh on a copy whose requirements.txt pins
        another version of one transitive dependency."""
        if self._bumped:
            return self._bumped
        name, old, new = self.BUMP
        d = self.dir / "bump" / "job-agent"
        rmtree(d.parent)
        shutil.copytree(self.project, d, ignore=shutil.ignore_patterns(".imgbuild", "uv.lock"))
        req = d / "requirements.txt"
        text = req.read_text()
        if f"{name}=={old}" not in text:
            raise BenchError(f"requirements.txt has no {name}=={old} to bump")
        req.write_text(text.replace(f"{name}=={old}", f"{name}=={new}"))
        sh([d / "make-lock.sh", "--force"], env=self.ctx.uv_env())
        self._bumped = (d / "uv.lock").read_text()
        changed = [l for l in self._bumped.splitlines() if l.startswith("version = ")] != \
                  [l for l in self.lock_text.splitlines() if l.startswith("version = ")]
        if not changed:
            raise BenchError("the bumped lock has the same versions")
        return self._bumped


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


LIVE = []  # servers and storages to clean up at exit


class Registry:
    """docker-registry on 127.0.0.1 with filesystem storage in the work directory; stopped by PID."""

    def __init__(self, work):
        self.dir = Path(tempfile.mkdtemp(dir=work, prefix="registry-"))
        self.port = free_port()
        cfg = self.dir / "config.yml"
        cfg.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                       f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
                       f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.log = open(self.dir / "log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        LIVE.append(self)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for _ in range(200):
            try:
                if opener.open(f"http://127.0.0.1:{self.port}/v2/", timeout=1).status == 200:
                    return
            except Exception:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise BenchError("docker-registry did not start")

    def stored_bytes(self):
        blobs = self.dir / "data/docker/registry/v2/blobs"
        return sum(p.stat().st_size for p in blobs.rglob("data")) if blobs.exists() else 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        rmtree(self.dir)
        if self in LIVE:
            LIVE.remove(self)

    close = stop


def host_index():
    """The host's package index configuration (empty: the tools' default index)."""
    for k in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if os.environ.get(k, "").strip():
            return os.environ[k].strip()
    p = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def pip_wheel(ctx):
    """A pip wheel for the builder stage (Debian's minbase python3 has no pip): the one bundled
    with this Python's ensurepip or Debian's python3-pip-whl, else downloaded with pip."""
    import ensurepip
    cands = sorted(glob.glob(os.path.join(os.path.dirname(ensurepip.__file__), "_bundled", "pip-*.whl")))
    cands += sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
    if cands:
        return cands[0]
    d = ctx.work / "pip-wheel"
    py = ctx.work / "uv-venv/bin/python"
    sh([py if py.exists() else sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", d, "pip"])
    return sorted(glob.glob(str(d / "pip-*.whl")))[0]


class Buildah:
    """buildah with overlay storage in the work directory and a containers.conf as ENGINEERING.md
    describes (runc, cgroupfs, nofile 1024, host netns for the steps that download)."""

    TAG = "localhost/bench-api:latest"
    BASE = "localhost/bench-base:bookworm"

    def __init__(self, ctx, fx):
        self.dir = ctx.work / "buildah"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "containers.conf").write_text(
            '[containers]\nnetns = "host"\ndefault_ulimits = ["nofile=1024:1024"]\n'
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=str(self.dir / "containers.conf"),
                        CONTAINERS_STORAGE_CONF=str(self.dir / "storage.conf"))
        self.fx = fx
        self.fallback = None
        LIVE.append(self)
        self.driver = os.environ.get("IMGBUILD_BENCH_BUILDAH_DRIVER", "overlay")
        try:
            self.storage(self.driver)
        except BenchError as e:
            if self.driver != "overlay":
                raise
            # Overlay is the fair stand-in for BuildKit; vfs copies every layer (~10x slower).
            self.fallback = f"overlay storage failed here, so buildah used vfs (slower: not a fair peer): {str(e).splitlines()[-1][:300]}"
            log("api: " + self.fallback)
            self.close_storage()
            self.driver = "vfs"
            self.storage("vfs")
        ca = os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
        (fx.project / ".dockerignore").write_text(".imgbuild\n.venv\n**/__pycache__\n")
        self.index = host_index()
        self.cmd = ["buildah", "bud", "--quiet", "--layers", "--isolation", "chroot", "--pull=never",
                    "-f", ROOT / "bench/api.Dockerfile", "--build-arg", f"BASE={self.BASE}",
                    "--build-arg", f"INDEX_URL={self.index}", "--build-arg", "CA_FILE=/etc/bench-ca.crt",
                    "-v", f"{ca}:/etc/bench-ca.crt:ro", "-v", f"{pip_wheel(ctx)}:/opt/pip.whl:ro",
                    "-v", f"{self.dir / 'pip-cache'}:/root/.cache/pip", "-v", f"{ctx.work / 'uv-cache'}:/root/.cache/uv",
                    "-t", self.TAG, fx.project]
        (self.dir / "pip-cache").mkdir(exist_ok=True)
        (ctx.work / "uv-cache").mkdir(exist_ok=True)

    def storage(self, driver):
        (self.dir / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\ngraphroot = "{self.dir / "root"}"\nrunroot = "{self.dir / "run"}"\n')
        # The same base as imgbuild's: its OCI layout, copied into buildah's storage.
        sh(["skopeo", "copy", "-q", f"oci:{self.fx.base}:bookworm", f"containers-storage:{self.BASE}"], env=self.env)

    def build(self):
        return run(self.cmd, env=self.env)

    def cold(self):
        """No image or intermediate layer of the build; the base and the pip/uv caches stay."""
        sh(["buildah", "rmi", "-f", self.TAG], env=self.env, check=False)
        sh(["buildah", "rmi", "--prune"], env=self.env, check=False)

    def close_storage(self):
        sh(["buildah", "rm", "--all"], env=self.env, check=False)
        sh(["buildah", "rmi", "--all", "--force"], env=self.env, check=False)
        # containers/storage keeps its overlay home mounted: unmount what is under our directory.
        mounts = [l.split()[1] for l in open("/proc/self/mounts")]
        for m in sorted((m for m in mounts if m.startswith(str(self.dir) + "/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        rmtree(self.dir / "root")
        rmtree(self.dir / "run")

    def close(self):
        self.close_storage()
        rmtree(self.dir)
        (self.fx.project / ".dockerignore").unlink(missing_ok=True)
        if self in LIVE:
            LIVE.remove(self)


# ---------------------------------------------------------------------------------------------
# Sections

def section_layers(S, ctx):
    runs = ctx.runs
    inputs = [("tree", "~150 MB tree of many small files (numpy, pandas, tzdata; pip-installed with bytecode)", tree(ctx)),
              ("big", "one 500 MB file", bigfile())]
    eq, dflt = GZ_EQUAL, GZ_DEFAULT
    for key, label, src in inputs:
        size, nfiles = du(src)
        log(f"layers: {label}: {size / 1e6:.0f} MB in {nfiles} files")
        warm(src)
        lp = LayerProject(ctx, src, f"layers-{key}")
        out = ctx.work / "peer.out"

        def peer(cmd, src=src):
            def f(i):
                out.unlink(missing_ok=True)
                r = run(f"tar -C {shlex.quote(str(src))} -cf - . | {cmd} > {shlex.quote(str(out))}")
                r.bytes = out.stat().st_size
                return r
            return f

        lp.build("gzip", level=eq)  # warm-up: binary, page cache
        if ctx.perf and shutil.which("perf"):
            for comp in ("gzip", "zstd"):
                lp.fresh()
                perf_note(S, ctx, f"layers-{key}-{comp}", f"one imgbuild {comp} build of the {key} input"
                          + (f" (level {eq})" if comp == "gzip" else " (level 3)"),
                          lp.argv(comp, eq, json_=False), lp.root, lp.env)
        # (row, compared with, how): every ratio pairs the same compressor settings.
        spec = [(f"imgbuild gzip -{eq}", None, lambda i: lp.build("gzip", level=eq)),
                (f"tar | pigz -p2 -{eq}", f"imgbuild gzip -{eq}", peer(f"pigz -p2 -{eq}")),
                (f"tar | gzip -{eq}", f"imgbuild gzip -{eq}", peer(f"gzip -{eq}")),
                (f"imgbuild gzip -{dflt} (default)", None, lambda i: lp.build("gzip", level=dflt)),
                (f"tar | pigz -p2 -{dflt}", f"imgbuild gzip -{dflt} (default)", peer(f"pigz -p2 -{dflt}")),
                ("imgbuild zstd -3", None, lambda i: lp.build("zstd")),
                ("tar | zstd -3 -T2", "imgbuild zstd -3", peer("zstd -q -3 -T2"))]
        res = rounds([(w, f) for w, _, f in spec], runs, warmup=False)
        out.unlink(missing_ok=True)
        lp.fresh()
        rows, data = [], {"input_bytes": size, "files": nfiles, "gzip_level_equal": eq, "gzip_level_default": dflt}
        for what, base, _ in spec:
            rs = res[what]
            st = secs(rs)
            ratio = stats(ratios(rs, res[base])) if base else None
            b, wb = bound(rs)
            rows.append([what] + time_cells(st) + [f"{size / st['median'] / 1e6:.0f} MB/s", fmt_s(cpu(rs)["median"])] + bound_cells(rs)
                        + [fmt_b(rs[-1].bytes), f"{rs[-1].bytes / size * 100:.1f} %", f"{max(r.rss_mib for r in rs):.0f} MiB",
                           fmt_x(ratio) if ratio else "—"])
            data[what] = {"seconds": st, "cpu_seconds": cpu(rs), "bound_seconds": b, "wall_over_bound": wb,
                          "output_bytes": rs[-1].bytes, "rss_mib": rss(rs), "ratio_peer_over_imgbuild": ratio}
        S.result(key, data)
        S.table(f"{label}: {size / 1e6:.0f} MB, {nfiles} files", ["what"] + TIME_HEADER + ["throughput", "CPU time"] + BOUND_HEADER
                + ["output", "of input", "peak RSS", "imgbuild speed-up (pairs, same settings)"], rows,
                "Cold layer cache, warm page cache. imgbuild: `imgbuild build --gzip-level N` of a one-layer image on a base seen before "
                "(the host's libc & co. and numpy's bundled libraries: the native-library check needs what the extension modules load) "
                "(walk, hash every file, tar, compress, diff_id and digest, blob into its store, OCI layout written). Peers: "
                "`tar -C DIR -cf - .` piped into the compressor, written to a file (no digest computed). Each ratio pairs "
                f"equal settings: imgbuild at gzip level N against `pigz -p2 -N` and `gzip -N` (N = {eq}, the peers' default, and "
                f"N = {dflt}, imgbuild's default), imgbuild's zstd (level 3, 2 workers) against `zstd -3 -T2`. Speed-up = peer "
                "time / imgbuild time, per pair of the same round. CPU time is user + system (median) of every process and thread "
                "of the command (wait4's rusage of the waited-for children). " + BOUND_NOTE + " Peak RSS of the peers is the "
                "largest process of the pipeline.")
        d = data
        g = d[f"tar | pigz -p2 -{eq}"]["ratio_peer_over_imgbuild"]
        g5 = d[f"tar | pigz -p2 -{dflt}"]["ratio_peer_over_imgbuild"]
        z = d["tar | zstd -3 -T2"]["ratio_peer_over_imgbuild"]
        short = "tree" if key == "tree" else "500 MB file"

        def at(what):
            x = d[what]
            return f"(wall / 2-core bound {x['wall_over_bound']['median']:.2f})"
        if key == "tree":
            S.target(f"gzip -{eq} ≥ {TARGET['gzip_tree_18']}× tar|pigz -p2 -{eq} (tree, issue 18)",
                     f"{g['median']:.2f}× {at(f'imgbuild gzip -{eq}')}", g["median"] >= TARGET["gzip_tree_18"])
            S.target(f"zstd -3 ≥ {TARGET['zstd_tree_18']}× tar|zstd -3 -T2 (tree, issue 18)",
                     f"{z['median']:.2f}× {at('imgbuild zstd -3')}", z["median"] >= TARGET["zstd_tree_18"])
        else:
            S.target(f"gzip -{eq} ≥ {TARGET['gzip_big_18']}× tar|pigz -p2 -{eq} (500 MB file, issue 18)",
                     f"{g['median']:.2f}× {at(f'imgbuild gzip -{eq}')}", g["median"] >= TARGET["gzip_big_18"])
        S.target(f"gzip -{eq} ≥ {TARGET['gzip_vs_pigz']}× tar|pigz -p2 -{eq} ({short}, issue 7)", f"{g['median']:.2f}×", g["median"] >= TARGET["gzip_vs_pigz"])
        S.target(f"zstd -3 ≥ {TARGET['zstd_vs_cli']}× tar|zstd -3 -T2 ({short}, issue 7)", f"{z['median']:.2f}×", z["median"] >= TARGET["zstd_vs_cli"])
        S.note(f"{label}: what the default level {dflt} buys: imgbuild gzip -{dflt} vs `pigz -p2 -{dflt}` "
               f"{fmt_x(g5)}; vs `pigz -p2 -{eq}` (the peer's default) "
               f"{fmt_x(stats(ratios(res[f'tar | pigz -p2 -{eq}'], res[f'imgbuild gzip -{dflt} (default)'])))}, "
               f"output {d[f'imgbuild gzip -{dflt} (default)']['output_bytes'] / d[f'imgbuild gzip -{eq}']['output_bytes'] * 100 - 100:+.1f} % "
               f"against level {eq}.")
    S.note("The 500 MB file repeats one 32 KiB random block between runs of text: zstd's long window finds the repeats "
           "(see its output size), gzip's 32 KiB window cannot. The tree is the realistic input.")


def timing_breakdown(rs):
    keys = sorted({k for r in rs for k in (r.json or {}).get("timings", {})})
    return {k: stats(r.json["timings"].get(k, 0.0) for r in rs) for k in keys}


def breakdown_rows(label, bd, wall):
    order = ["base", "layers", "verify", "write", "push", "total"]
    keys = [k for k in order if k in bd] + [k for k in bd if k not in order]
    return [[f"{label}: {k}"] + time_cells(bd[k]) + [f"{bd[k]['median'] / wall * 100:.0f} % of wall"] for k in keys]


def section_api(S, ctx):
    runs = ctx.runs
    fx = ctx.fixture()
    log("api: buildah storage and base")
    bh = Buildah(ctx, fx)
    try:
        uv, py = ctx.uv(), ("/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable)
        target, tgz = ctx.work / "uv-target", ctx.work / "uv-target.tar.gz"
        uv_env = ctx.uv_env()

        def uv_pigz(i):
            rmtree(target)
            tgz.unlink(missing_ok=True)
            # --offline after the warm-up round: the peer's best case, no index round trips (imgbuild's warm
            # wheel store needs none either); the first round fills uv's cache from the index.
            r = run(f"{shlex.quote(uv)} pip install --quiet {'--offline ' if i else ''}--python {py} --target {target} -r {fx.requirements} && "
                    f"tar -C {target} -cf - . | pigz -p2 -{GZ_DEFAULT} > {tgz}", env=uv_env)
            r.bytes = tgz.stat().st_size
            return r

        def ib_cold(i):
            fx.cold()
            return fx.build()

        def ib_first(i):
            fx.cold(first_on_base=True)
            return fx.build()

        def bh_cold(i):
            bh.cold()
            return bh.build()

        def ib_change(i):
            fx.change(i)
            return fx.build()

        log(f"api: {runs} rounds + a warm-up (imgbuild, uv+pigz, buildah: cold, no-op, one-file change)")
        res = rounds([("imgbuild cold", ib_cold), ("imgbuild first build on the base", ib_first), ("uv+pigz cold", uv_pigz), ("buildah cold", bh_cold),
                      ("imgbuild no-op", lambda i: fx.build()), ("buildah no-op", lambda i: bh.build()),
                      ("imgbuild one-file change", ib_change), ("buildah one-file change", lambda i: bh.build())], runs)
        fx.restore()
        if bh.fallback:
            S.note("**buildah storage:** " + bh.fallback)
        data = {"packages": fx.packages, "buildah_storage": bh.driver, "index": "host default" if not bh.index else "host index-url"}
        rows = []
        spec = [("imgbuild cold", None, "cold: empty layer cache and output layout, warm wheel cache, a base seen before"),
                ("imgbuild first build on the base", None, "also no facts about the base: its layers are read to list its files and find its Python"),
                ("uv+pigz cold", "imgbuild cold", f"`uv pip install --offline --target` (warm uv cache) + `tar | pigz -p2 -{GZ_DEFAULT}` of the deps (imgbuild's default level)"),
                ("buildah cold", "imgbuild cold", f"multi-stage Dockerfile, no image or layer of it in storage (before: {BUILDAH_BEFORE['cold']} s)"),
                ("imgbuild no-op", None, "nothing changed"),
                ("buildah no-op", "imgbuild no-op", f"every step cached (before: {BUILDAH_BEFORE['no-op']} s)"),
                ("imgbuild one-file change", None, "src/main.py changed"),
                ("buildah one-file change", "imgbuild one-file change", f"`COPY src` and later steps redone (before: {BUILDAH_BEFORE['one-file change']} s)")]
        for what, base, how in spec:
            rs = res[what]
            st = secs(rs)
            ratio = stats(ratios(rs, res[base])) if base else None
            b = rs[-1].bytes
            rows.append([what] + time_cells(st) + [fmt_s(cpu(rs)["median"])] + bound_cells(rs) + [fmt_b(b) if b else "—", f"{max(r.rss_mib for r in rs):.0f} MiB", fmt_x(ratio) if ratio else "—", how])
            bb, wb = bound(rs)
            data[what] = {"seconds": st, "cpu_seconds": cpu(rs), "bound_seconds": bb, "wall_over_bound": wb, "rss_mib": rss(rs), "bytes": b, "ratio_peer_over_imgbuild": ratio}
        S.table(f"The job-agent api image ({fx.packages} locked packages, Debian bookworm python3 base)",
                ["what"] + TIME_HEADER + ["CPU time"] + BOUND_HEADER + ["compressed output", "peak RSS", "imgbuild speed-up (pairs)", ""], rows,
                "Rounds alternate the tools; the first round (warm-up: wheel, uv and pip caches, page cache) is not counted. "
                f"imgbuild's output: all its layers (python-deps and app, gzip level {GZ_DEFAULT}, its default); uv+pigz: the tarball "
                f"of the installed packages at the same level. {BOUND_NOTE} "
                f"buildah: `buildah bud --layers --isolation chroot`, {bh.driver} storage, runc, cgroupfs, nofile 1024, host netns; "
                "`bench/api.Dockerfile` (builder stage: pip installs uv with the host's index configuration, uv installs the "
                "exported lock; runtime stage: `COPY --from=builder` of dist-packages and bin, then the app), warm pip and uv "
                "caches bind-mounted. buildah's peak RSS is its largest process.")
        bd = timing_breakdown(res["imgbuild cold"])
        S.result("imgbuild_cold_timings", bd)
        S.table("Where a cold imgbuild api build spends its time (`imgbuild build --json` timings)",
                ["phase"] + TIME_HEADER + ["share"], breakdown_rows("cold", bd, secs(res["imgbuild cold"])["median"]),
                "`layers` is the python-deps layer (lock, wheels from the store, unpack, scripts, tar, gzip, hash) and the app layer.")
        for k, v in data.items():
            S.result(k, v)
        u, b = data["uv+pigz cold"]["ratio_peer_over_imgbuild"], data["buildah cold"]["ratio_peer_over_imgbuild"]
        S.target(f"cold api ≥ {TARGET['api_vs_uv']}× uv pip install --target + tar|pigz -p2", f"{u['median']:.2f}× (gzip -{GZ_DEFAULT} both)", u["median"] >= TARGET["api_vs_uv"])
        S.target(f"cold api ≥ {TARGET['api_vs_buildah']}× buildah bud --layers (overlay)", f"{b['median']:.2f}×", b["median"] >= TARGET["api_vs_buildah"])
        if ctx.perf and shutil.which("perf"):
            fx.cold()
            perf_note(S, ctx, "api-cold", "one cold api build", [IMGBUILD, "-q", "build", "api"], fx.project, fx.env)
    finally:
        fx.restore()
        bh.close()


def perf_note(S, ctx, key, what, argv, cwd, env):
    """Profiles one run of argv with perf; adds the top symbols and the per-thread split to S."""
    data_file = ctx.work / f"perf-{key}.data"
    sh(["perf", "record", "-q", "-F", "2000", "-g", "-o", data_file, "--"] + argv, cwd=cwd, env=env)
    rep = sh(["perf", "report", "-i", data_file, "--stdio", "--no-children", "--sort", "dso,symbol", "--percent-limit", "1.5", "-g", "none"], check=False)
    lines = [" ".join(l.split()[:3]) + " " + " ".join(l.split()[3:]).rstrip(" -") for l in rep.stdout.splitlines()
             if l.strip() and not l.startswith("#")][:30]
    threads = perf_threads(data_file)
    S.note(f"`perf record` of {what} (self time, ≥ 1.5 %):\n\n```\n" + "\n".join(lines) + "\n```\n\n"
           "Per thread (share of all samples, then its top symbols): the busiest thread is the critical path.\n\n```\n"
           + "\n".join(threads) + "\n```")
    S.result(f"perf {key}", {"top": lines, "threads": threads})
    data_file.unlink(missing_ok=True)


def perf_threads(data_file, top=3):
    """Samples per thread of a perf.data file, with each thread's leading symbols."""
    out = sh(["perf", "script", "-i", data_file, "-F", "tid,ip,sym"], check=False).stdout
    count, tid, first = {}, None, False
    for line in out.splitlines():
        if not line.strip():
            tid = None
            continue
        if tid is None or not line[:1].isspace():
            tid, first = line.strip(), True
            continue
        if first:
            parts = line.split(None, 1)
            sym = parts[1].strip()[:80] if len(parts) > 1 else "?"
            count.setdefault(tid, {}).setdefault(sym, 0)
            count[tid][sym] += 1
            first = False
    total = sum(sum(v.values()) for v in count.values()) or 1
    lines = []
    for t, syms in sorted(count.items(), key=lambda kv: -sum(kv[1].values()))[:4]:
        n = sum(syms.values())
        best = sorted(syms.items(), key=lambda kv: -kv[1])[:top]
        lines.append(f"thread {t}: {100 * n / total:4.1f} % — " + ", ".join(f"{s} {100 * m / n:.0f} %" for s, m in best))
    return lines


def section_rebuilds(S, ctx):
    runs = ctx.runs
    fx = ctx.fixture()
    fx.build()
    log("rebuilds: no-op")
    noop = [fx.build() for _ in range(runs + 1)][1:]
    log("rebuilds: one-file change")
    one = []
    for i in range(runs + 1):
        fx.change(i)
        one.append(fx.build())
    one = one[1:]
    fx.restore()
    log("rebuilds: dependency bump (make-lock.sh with one pin changed)")
    bumped = fx.bumped_lock()
    # The bumped wheel is fetched once, untimed (warm wheel cache); then the layer cache as it is
    # after building the old lock is restored before each timed build of the new one.
    fx.lock.write_text(bumped)
    fx.build()
    fx.lock.write_text(fx.lock_text)
    fx.cold()
    fx.build()
    snap = ctx.work / "store-snapshot"
    rmtree(snap)
    snap.mkdir()
    for p in fx.store.iterdir():
        if p.name not in WHEEL_CACHE and p.is_dir():
            shutil.copytree(p, snap / p.name)
    bump = []
    for i in range(runs + 1):
        for p in list(fx.store.iterdir()):
            if p.name not in WHEEL_CACHE and p.is_dir():
                rmtree(p)
        for p in snap.iterdir():
            shutil.copytree(p, fx.store / p.name)
        fx.lock.write_text(bumped)
        bump.append(fx.build())
        fx.lock.write_text(fx.lock_text)
    bump = bump[1:]
    fx.restore()
    rmtree(snap)
    name, old, new = fx.BUMP
    rows, data = [], {}
    for what, rs, how in [("no-op rebuild", noop, "nothing changed"),
                          ("one-file app change", one, "src/main.py changed: the app layer is rebuilt"),
                          ("dependency bump", bump, f"uv.lock with {name} {old} → {new} (make-lock.sh): the python-deps layer is rebuilt")]:
        st = secs(rs)
        rows.append([what] + time_cells(st) + [f"{max(r.rss_mib for r in rs):.0f} MiB", ", ".join(f"{l['name']} {'cached' if l['cached'] else 'built'}" for l in rs[-1].json["layers"]), how])
        data[what] = {"seconds": st, "rss_mib": rss(rs), "timings": timing_breakdown(rs)}
        S.result(what, data[what])
    S.table("imgbuild rebuilds of the api image", ["what"] + TIME_HEADER + ["peak RSS", "layers", ""], rows,
            "Each run is a whole `imgbuild build api` process (the first run of each kind is not counted). The wheel of the "
            "bumped version is in the store (warm wheel cache); before each bump run the layer cache is put back as it was "
            "after building the old lock.")
    brow = []
    for what in data:
        wall = data[what]["seconds"]["median"]
        brow += breakdown_rows(what, data[what]["timings"], wall)
    S.table("Where rebuild time goes (`--json` timings; the rest of wall time is process start, config and lock parsing)",
            ["phase"] + TIME_HEADER + ["share"], brow)
    n, o = data["no-op rebuild"]["seconds"]["median"], data["one-file app change"]["seconds"]["median"]
    S.target(f"no-op rebuild ≤ {TARGET['noop_s'] * 1000:.0f} ms", fmt_s(n), n <= TARGET["noop_s"])
    S.target(f"one-file app change ≤ {TARGET['onefile_s'] * 1000:.0f} ms", fmt_s(o), o <= TARGET["onefile_s"])


def section_push(S, ctx):
    runs = ctx.runs
    data_mib = int(os.environ.get("IMGBUILD_BENCH_PUSH_MIB", "64"))
    w = ctx.work / "push"
    rmtree(w)
    proj = w / "project"
    (proj / "app").mkdir(parents=True)
    (proj / "data").mkdir()
    env = dict(os.environ, IMGBUILD_CACHE=str(w / "store"), SOURCE_DATE_EPOCH=EPOCH, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    sh(["bash", ROOT / "fixtures/base/make-busybox.sh", w / "rootfs"])
    sh([IMGBUILD, "-q", "base", "import", "rootfs", "--output", "oci:base:bb"], cwd=w, env=env)
    (proj / "data/blob.bin").write_bytes(random.Random(7).randbytes(data_mib << 20))  # incompressible
    app = [proj / f"app/m{i}.py" for i in range(1, 51)]
    for i, p in enumerate(app, 1):
        p.write_text(f"module {i}\n")

    def config(repo):
        (proj / "imgbuild.toml").write_text(
            f'[defaults]\nplatform = "linux/amd64"\n[images.api]\nrepository = "{repo}"\nbase = "oci:{w}/base:bb"\ncmd = ["/bin/sh"]\n'
            '[[images.api.layers]]\nname = "data"\nfiles = [{ from = "data", to = "/data" }]\n'
            '[[images.api.layers]]\nname = "app"\nfiles = [{ from = "app", to = "/app" }]\n')

    def build():
        return run([IMGBUILD, "-q", "build", "api"], cwd=proj, env=env)

    def push():
        r = run([IMGBUILD, "-q", "push", "api", "--json"], cwd=proj, env=env, capture=True)
        r.json = imgbuild_json(r)
        r.bytes = r.json["uploaded_bytes"]
        return r

    layout = proj / ".imgbuild/oci"
    config("127.0.0.1:1/bench/api")
    build()
    warm(layout)
    warm(w / "store/blobs")
    image_bytes = sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file())
    res = {k: [] for k in ["skopeo fresh", "skopeo unchanged", "skopeo one layer changed",
                           "imgbuild fresh", "imgbuild unchanged", "imgbuild one layer changed"]}
    log(f"push: {runs} rounds + a warm-up (image {fmt_b(image_bytes)})")
    for i in range(runs + 1):
        change = f"module changed in round {i}\n"
        got = {}
        # skopeo: a fresh registry, the layout imgbuild wrote.
        reg = Registry(w)
        try:
            dest = f"docker://127.0.0.1:{reg.port}/bench/api:latest"
            cp = ["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:api", dest]
            r = run(cp, env=env); r.bytes = reg.stored_bytes(); got["skopeo fresh"] = r
            before = reg.stored_bytes()
            r = run(cp, env=env); r.bytes = reg.stored_bytes() - before; got["skopeo unchanged"] = r
            app[6].write_text(change); build()
            before = reg.stored_bytes()
            r = run(cp, env=env); r.bytes = reg.stored_bytes() - before; got["skopeo one layer changed"] = r
            app[6].write_text("module 7\n"); build()
        finally:
            reg.stop()
        # imgbuild: a fresh registry; fresh, unchanged and one-layer-changed pushes.
        reg = Registry(w)
        try:
            config(f"127.0.0.1:{reg.port}/bench/api")
            build()
            r = push(); r.stored = reg.stored_bytes(); got["imgbuild fresh"] = r
            before = reg.stored_bytes()
            r = push(); r.stored = reg.stored_bytes() - before; got["imgbuild unchanged"] = r
            app[6].write_text(change); build()
            before = reg.stored_bytes()
            r = push(); r.stored = reg.stored_bytes() - before; got["imgbuild one layer changed"] = r
            app[6].write_text("module 7\n"); build()
        finally:
            reg.stop()
        if i > 0:
            for k, r in got.items():
                res[k].append(r)
        log(f"  round {i + 1}/{runs + 1}" + (" (warm-up)" if i == 0 else "") + ": "
            + ", ".join(f"{k} {fmt_s(r.seconds)}" for k, r in got.items()))
    rows, data = [], {"image_bytes": image_bytes}
    for what, base, how in [("imgbuild fresh", None, "`imgbuild push api` to an empty registry"),
                            ("skopeo fresh", "imgbuild fresh", "`skopeo copy oci:LAYOUT:api docker://…` of the same layout"),
                            ("imgbuild unchanged", None, "the same image again"),
                            ("skopeo unchanged", "imgbuild unchanged", "the same copy again"),
                            ("imgbuild one layer changed", None, "one app file changed: app layer, config, manifest"),
                            ("skopeo one layer changed", "imgbuild one layer changed", "the changed layout copied")]:
        rs = res[what]
        st = secs(rs)
        ratio = stats(ratios(rs, res[base])) if base else None
        up = ", ".join(sorted({fmt_b(r.bytes) if r.bytes else "0 B" for r in rs})) if what.startswith("imgbuild") else "—"
        stored = [getattr(r, "stored", r.bytes) for r in rs]
        rows.append([what] + time_cells(st) + [up, ", ".join(sorted({fmt_b(b) if b else "0 B" for b in stored})), fmt_x(ratio) if ratio else "—", how])
        data[what] = {"seconds": st, "uploaded_bytes": [r.bytes for r in rs] if what.startswith("imgbuild") else None,
                      "registry_new_bytes": stored, "ratio_peer_over_imgbuild": ratio}
    frac = stats(ratios(res["imgbuild unchanged"], res["imgbuild fresh"]))
    data["unchanged_over_fresh"] = frac
    chg = stats(ratios(res["imgbuild one layer changed"], res["imgbuild fresh"]))
    data["changed_over_fresh"] = chg
    for k, v in data.items():
        S.result(k, v)
    S.table(f"Push to a loopback docker-registry: busybox base + {data_mib} MiB incompressible data layer + 50-file app layer ({fmt_b(image_bytes)} of blobs)",
            ["what"] + TIME_HEADER + ["uploaded (imgbuild --json)", "new bytes in the registry", "imgbuild speed-up (pairs)", ""], rows,
            "Each round starts a new docker-registry (127.0.0.1, filesystem storage) for skopeo and another for imgbuild; the "
            "first round is a warm-up. \"New bytes in the registry\" is the growth of its blob store (what had to be sent "
            "at least once); imgbuild also reports the bytes it uploaded. "
            f"Unchanged / fresh push time (pairs): {fmt_x(frac)}; one layer changed / fresh: {fmt_x(chg)}.")
    ub = max(data["imgbuild unchanged"]["uploaded_bytes"])
    f = data["skopeo fresh"]["ratio_peer_over_imgbuild"]
    S.target(f"unchanged push uploads 0 bytes in ≤ {TARGET['unchanged_push_frac']}× the fresh push",
             f"{ub} bytes, {frac['median']:.3f}×", ub == 0 and frac["median"] <= TARGET["unchanged_push_frac"])
    S.target("fresh push ≤ 1.0× skopeo copy's time (issue 4)", f"imgbuild takes {1 / f['median']:.2f}× skopeo's time", f["median"] >= 1 / TARGET["push_vs_skopeo"])


def section_memory(S, ctx):
    runs = ctx.runs
    src = scaled_tree(ctx, 200)
    size, nfiles = du(src)
    warm(src)
    lp = LayerProject(ctx, src, "memory-layer")
    rows, data = [], {}
    log("memory: 200 MB layer, gzip and zstd")
    for comp in ("gzip", "zstd"):
        rs = [lp.build(comp) for _ in range(runs)]
        data[f"200 MB layer {comp}"] = {"rss_mib": rss(rs), "seconds": secs(rs)}
        st = rss(rs)
        rows.append([f"200 MB layer ({nfiles} files), {comp}", f"{st['median']:.1f} MiB", f"{st['min']:.1f} MiB", f"{st['max']:.1f} MiB", str(st["runs"]), fmt_s(secs(rs)["median"])])
    lp.fresh()
    log("memory: api fixture, cold")
    fx = ctx.fixture()
    fx.build()
    rs = []
    for _ in range(runs):
        fx.cold()
        rs.append(fx.build())
    data["api cold"] = {"rss_mib": rss(rs), "seconds": secs(rs)}
    st = rss(rs)
    rows.append([f"api image, cold ({fx.packages} packages)", f"{st['median']:.1f} MiB", f"{st['min']:.1f} MiB", f"{st['max']:.1f} MiB", str(st["runs"]), fmt_s(secs(rs)["median"])])
    for k, v in data.items():
        S.result(k, v)
    S.table("Peak RSS of the whole imgbuild process", ["build", "median", "min", "max", "runs", "time (median)"], rows,
            "`ru_maxrss` of the imgbuild process (all its threads; it starts no child process), from `wait4` in GNU time "
            "(`/usr/bin/time -f %M`): a process this driver starts directly would inherit the driver's peak RSS as its floor. "
            "Cold layer cache.")
    worst = max(v["rss_mib"]["max"] for v in data.values())
    S.target(f"peak memory ≤ {TARGET['rss_mib']:.0f} MiB (200 MB layer, api build)", f"{worst:.1f} MiB (worst run)", worst <= TARGET["rss_mib"])


def section_scaling(S, ctx):
    runs = ctx.runs
    rows, data = [], {}
    for mb in (50, 200, 800):
        src = scaled_tree(ctx, mb)
        size, nfiles = du(src)
        warm(src)
        lp = LayerProject(ctx, src, f"scaling-{mb}")
        log(f"scaling: ~{mb} MB ({nfiles} files): cold builds, then no-op rebuilds")
        cold = [lp.build("gzip") for _ in range(runs)]
        noop = [lp.build("gzip", fresh=False) for _ in range(runs + 1)][1:]
        lp.fresh()
        c, n = secs(cold), secs(noop)
        data[f"{mb}"] = {"bytes": size, "files": nfiles, "cold": c, "cold_rss_mib": rss(cold), "noop": n, "noop_rss_mib": rss(noop),
                         "output_bytes": cold[-1].bytes}
    base = data["50"]
    for mb, d in data.items():
        per = d["cold"]["median"] / d["bytes"]
        rel = per / (base["cold"]["median"] / base["bytes"])
        d["cost_per_byte_vs_50"] = rel
        d["noop_vs_50"] = d["noop"]["median"] / base["noop"]["median"]
        rows.append([f"~{mb} MB", f"{d['bytes'] / 1e6:.0f} MB", str(d["files"])] + [fmt_s(d["cold"][k]) for k in ("median", "min", "max")]
                    + [f"{d['bytes'] / d['cold']['median'] / 1e6:.0f} MB/s", f"{rel:.2f}", f"{d['cold_rss_mib']['max']:.0f} MiB"]
                    + [fmt_s(d["noop"][k]) for k in ("median", "min", "max")] + [f"{d['noop_vs_50']:.2f}", f"{d['noop_rss_mib']['max']:.0f} MiB"])
    for k, v in data.items():
        S.result(k, v)
    S.table("Build time, peak memory and no-op rebuild by layer size (gzip)",
            ["site-packages", "bytes", "files", "cold median", "min", "max", "throughput", "time per byte vs ~50 MB", "peak RSS",
             "no-op median", "min", "max", "no-op vs ~50 MB", "no-op peak RSS"], rows,
            f"Synthesised site-packages trees (the numpy/pandas tree's files copied under renamed packages; real copies, no links), "
            f"{runs} cold builds (empty layer cache) and {runs} no-op rebuilds each. Linear cost: time per byte stays near 1.00× "
            "the ~50 MB figure; a flat no-op: its time does not grow with bytes (it may grow with the number of files, "
            "which the stat cache checks).")
    worst = max(d["cold_rss_mib"]["max"] for d in data.values())
    S.target(f"peak memory ≤ {TARGET['rss_mib']:.0f} MiB for any layer size (~50 to ~800 MB)", f"{worst:.1f} MiB (worst run)", worst <= TARGET["rss_mib"])

    # No-op rebuilds by number of files: what an unchanged file costs (a stat, no read).
    rows, fdata = [], {}
    for n in (1000, 10000, 100000):
        src = many_files(n)
        size, nfiles = du(src)
        warm(src)
        lp = LayerProject(ctx, src, f"files-{n}")
        log(f"scaling: {nfiles} small files: cold builds, then no-op rebuilds")
        cold = [lp.build("gzip") for _ in range(runs)]
        noop = [lp.build("gzip", fresh=False) for _ in range(runs + 1)][1:]
        lp.fresh()
        fdata[n] = {"bytes": size, "files": nfiles, "cold": secs(cold), "cold_rss_mib": rss(cold), "noop": secs(noop),
                    "noop_cpu": cpu(noop), "noop_rss_mib": rss(noop), "noop_timings": timing_breakdown(noop)}
    first = fdata[1000]
    for n, d in fdata.items():
        per = d["noop"]["median"] / d["files"] * 1e6
        marg = ((d["noop"]["median"] - first["noop"]["median"]) / (d["files"] - first["files"]) * 1e6) if n != 1000 else None
        d["noop_us_per_file"], d["noop_marginal_us_per_file"] = per, marg
        tl = d["noop_timings"].get("layers", {}).get("median")
        rows.append([f"{d['files']}", fmt_b(d["bytes"])] + [fmt_s(d["cold"]["median"]), f"{d['cold_rss_mib']['max']:.0f} MiB"]
                    + [fmt_s(d["noop"][k]) for k in ("median", "min", "max")]
                    + [fmt_s(tl) if tl is not None else "—", f"{per:.2f} µs", f"{marg:.2f} µs" if marg is not None else "—",
                       fmt_s(d["noop_cpu"]["median"]), f"{d['noop_cpu']['median'] / d['files'] * 1e6:.2f} µs",
                       f"{d['noop_rss_mib']['max']:.0f} MiB"])
        S.result(f"files {n}", d)
    S.table("No-op rebuild by number of files (gzip)",
            ["files", "bytes", "cold median", "cold peak RSS", "no-op median", "min", "max", "no-op `layers` phase",
             "no-op per file", "per extra file (vs 1k)", "no-op CPU time", "CPU per file", "no-op peak RSS"], rows,
            f"Trees of small files (0.5–4 kB of text each, 100 to a directory), one files layer on the same base; {runs} cold builds "
            f"and {runs} no-op rebuilds each (whole `imgbuild build` processes, the first no-op not counted). An unchanged "
            "file is stat'ed, never opened: the stat cache knows its hash by size, mtime and inode. \"per file\" is the whole "
            "no-op wall time over the files; \"per extra file\" the growth from the 1k tree, the cost of one more file "
            "without the fixed start-up; CPU time (user + system of all threads, 10 ms resolution) is less sensitive to "
            "other load on the machine than wall time.")
    big = fdata[100000]
    worst_files = max(max(d["cold_rss_mib"]["max"], d["noop_rss_mib"]["max"]) for d in fdata.values())
    S.target(f"peak memory ≤ {TARGET['rss_mib']:.0f} MiB for any number of files (cold builds and no-op rebuilds of 1k to 100k, issue 18)",
             f"{worst_files:.1f} MiB (worst run)", worst_files <= TARGET["rss_mib"])
    S.target(f"no-op rebuild ≤ {TARGET['noop_us_per_file']:.0f} µs per unchanged file (100k files, issue 18)",
             f"{big['noop_us_per_file']:.2f} µs per file ({fmt_s(big['noop']['median'])})",
             big["noop_us_per_file"] <= TARGET["noop_us_per_file"])


# The real-world corpus (issue 11): tests/corpus/<name>/SOURCE, data from tests/corpus/fetch-data.py.
CORPUS_DATA = Path(os.environ.get("IMGBUILD_CORPUS_DATA", Path.home() / ".cache/imgbuild-corpus"))


def corpus_files_host(index):
    """scheme://host the index links its files on (read from one simple page), for @FILES@."""
    req = urllib.request.Request(index.rstrip("/") + "/idna/", headers={"Accept": "text/html"})
    page = urllib.request.urlopen(req, timeout=30).read().decode()
    for part in page.split('href="')[1:]:
        url = part.split('"', 1)[0]
        if url.startswith(("https://", "http://")) and "/packages/" in url:
            return url[: url.index("/packages/")]
    raise BenchError("no absolute /packages/ link on the index's simple page for idna")


class CorpusProject:
    """One corpus project in the work directory, configured as tests/corpus.rs does: the lock onto a
    Debian python3 base of its suite; with its sources (fetch-data.py --sources) the project and its
    workspace members are installed too, as `uv sync --no-editable` would."""

    def __init__(self, ctx, name, base, index, files):
        import tomllib
        self.name = name
        self.source = tomllib.loads((ROOT / "tests/corpus" / name / "SOURCE").read_text())
        data = CORPUS_DATA / name
        if not (data / "uv.lock").is_file():
            raise BenchError(f"corpus {name}: no data at {data} (tests/corpus/fetch-data.py [--mirror DIR] [--sources])")
        self.sources = (data / "src").is_dir()
        self.dir = ctx.work / "corpus" / name
        rmtree(self.dir)
        if self.sources:
            shutil.copytree(data / "src", self.dir, symlinks=True)
        else:
            shutil.copytree(data, self.dir, ignore=shutil.ignore_patterns("src", "src.tmp"))
        lock = self.dir / "uv.lock"
        lock.write_text(lock.read_text().replace("@INDEX@", index.rstrip("/")).replace("@FILES@", files))
        extras = ", ".join(f'"{e}"' for e in self.source.get("extras", []))
        opts = self.source.get("layer_options", "")
        py = f'lock = "uv.lock", extras = [{extras}]'
        if not self.sources and "install_" not in opts and "packages" not in opts:
            py += ", install_project = false, install_workspace = false"
        if opts:
            py += ", " + opts
        (self.dir / "imgbuild.toml").write_text(
            f'[images.app]\nbase = "oci:{base}:{self.source["base"]}"\n{self.source.get("image_options", "")}\n{self.source.get("layers_before", "")}\n\n[[images.app.layers]]\nname = "python-deps"\npython = {{ {py} }}\n')
        self.packages = self.source["packages"]

    def build(self, env):
        """One timed `imgbuild build app --json`; `sdists` counts the wheels it built."""
        r = run([IMGBUILD, "build", "app", "--json"], cwd=self.dir, env=env, capture=True)
        r.json = imgbuild_json(r)
        r.sdists = sum(1 for l in r.err.splitlines() if l.startswith("built ") and " from the " in l)
        r.bytes = sum(l["size"] for l in r.json.get("layers", []))
        return r

    def try_build(self, env):
        """An untimed first build: (ok, the error's first line)."""
        p = sh([IMGBUILD, "build", "app"], cwd=self.dir, env=env, check=False)
        lines = [l for l in p.stderr.splitlines() if l.strip()]
        return p.returncode == 0, next((l for l in lines if l.startswith("error")), lines[0] if lines else "?")


def corpus_cold(store, project, keep_built=False):
    """Forgets the layers and (unless `keep_built`) the wheels built from sdists; keeps the
    downloaded wheels and sdists (blobs), the index pages, the build pins in imgbuild.lock and
    what the store knows of the bases."""
    prune_store(store, WHEEL_CACHE | BASE_FACTS | ({"python-sdist-wheel"} if keep_built else set()))
    rmtree(project / ".imgbuild")


def uv_forget_built(cache):
    """uv's cache without the wheels it built from sdists (its downloaded wheels, the sdists
    and the build requirements stay), so its next install builds them again. The count removed."""
    n = 0
    for d in cache.glob("sdists-v*"):
        for whl in list(d.rglob("*.whl")):
            rmtree(whl) if whl.is_dir() else whl.unlink()
            n += 1
    return n


def corpus_names():
    env = os.environ.get("IMGBUILD_BENCH_CORPUS")
    return env.split(",") if env else sorted(p.parent.name for p in (ROOT / "tests/corpus").glob("*/SOURCE"))


def section_corpus(S, ctx):
    import tomllib
    runs = ctx.runs
    # The host's index, else pip's default one (asked of pip, never written here), as the tests do.
    index = host_index() or sh([sys.executable, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"]).stdout.strip()
    files = corpus_files_host(index)
    w = ctx.work / "corpus"
    w.mkdir(parents=True, exist_ok=True)
    bases = {}
    for suite in ("bookworm", "trixie"):
        b = w / ".bases" / f"debian-{suite}"
        log(f"corpus: Debian {suite} python3 base")
        sh([ROOT / "fixtures/base/make-debian-python.sh", "--suite", suite, "--import", f"{b}:{suite}"],
           env=dict(os.environ, IMGBUILD=IMGBUILD))
        bases[suite] = b
    store = w / "store"
    env = dict(os.environ, IMGBUILD_CACHE=str(store), SOURCE_DATE_EPOCH=EPOCH)
    # Git sources from a local mirror where GitHub is out of reach (IMGBUILD_CORPUS_GIT_MIRROR, as
    # tests/corpus.rs reads it), through git's `insteadOf`.
    mirror = os.environ.get("IMGBUILD_CORPUS_GIT_MIRROR")
    if mirror:
        n = 0
        for d in sorted(Path(mirror).glob("*+*")):
            repo = d / "repo" if (d / "repo").is_dir() else d
            owner, name_ = d.name.split("+", 1)
            for suffix in (".git", ""):
                env[f"GIT_CONFIG_KEY_{n}"] = f"url.file://{repo}.insteadOf"
                env[f"GIT_CONFIG_VALUE_{n}"] = f"https://github.com/{owner}/{name_}{suffix}"
                n += 1
        env["GIT_CONFIG_COUNT"] = str(n)

    # 1. Per project, one run each: a first build (downloads into the shared store, builds the
    #    sdists, pins their build requirements), a cold build (layers and built wheels forgotten:
    #    every sdist built again), a rebuild with only the layers forgotten (0 sdists built).
    rows, data = [], {}
    for name in corpus_names():
        src = tomllib.loads((ROOT / "tests/corpus" / name / "SOURCE").read_text())
        cp = CorpusProject(ctx, name, bases[src["base"]], index, files)
        log(f"corpus {name}: first build ({cp.packages} packages{', with sources' if cp.sources else ''})")
        ok, err = cp.try_build(env)
        if not ok:
            rows.append([name, str(cp.packages), "yes" if cp.sources else "no", "fail", "—", "—", "—", "—", esc(err[:200])])
            data[name] = {"packages": cp.packages, "sources": cp.sources, "ok": False, "error": err}
            continue
        corpus_cold(store, cp.dir)
        cold = cp.build(env)
        corpus_cold(store, cp.dir, keep_built=True)
        again = cp.build(env)
        same = cold.json.get("digest") == again.json.get("digest")
        rows.append([name, str(cp.packages), "yes" if cp.sources else "no", str(cold.sdists), fmt_s(cold.seconds), fmt_b(cold.bytes),
                     str(again.sdists), fmt_s(again.seconds), "" if same else "rebuild gave another digest"])
        data[name] = {"packages": cp.packages, "sources": cp.sources, "ok": True, "sdists_built": cold.sdists,
                      "cold_seconds": cold.seconds, "layer_bytes": cold.bytes, "rebuild_sdists_built": again.sdists,
                      "rebuild_seconds": again.seconds, "same_digest": same}
    S.result("projects", data)
    ok = sum(1 for d in data.values() if d["ok"])
    S.table(f"The corpus: {ok} of {len(data)} projects build", 
            ["project", "packages", "sources", "sdists built (cold)", "cold build", "layers (gzip)", "sdists built (rebuild)", "rebuild", "note"], rows,
            "One run each (per-project figures, not ratios), one shared store. A first build downloads the wheels and "
            "sdists and pins the sdists' build requirements in imgbuild.lock; \"cold\" then forgets the layers and the "
            "wheels built from sdists (the downloads stay), so every sdist is built again in runc; \"rebuild\" forgets "
            "the layers only. \"sources\": the project's own tree was there (`fetch-data.py --sources`), so the project "
            "and its workspace members were built and installed too.")

    # 2. The largest lock with sdists, against uv building the same sdists.
    built = {n: d for n, d in data.items() if d["ok"] and d["sdists_built"]}
    if not built:
        S.note("No corpus project with sdists built: the uv comparison is not measured.")
        return
    # uv builds with the host's interpreter: compare on a lock for the bookworm base (the host's
    # CPython 3.11), the largest of them.
    bookworm = {n: d for n, d in built.items()
                if tomllib.loads((ROOT / "tests/corpus" / n / "SOURCE").read_text())["base"] == "bookworm"}
    if not bookworm:
        S.note("No bookworm project with sdists built: uv (which builds with the host's Python 3.11) is not compared.")
        return
    name = max(bookworm, key=lambda n: (bookworm[n]["packages"], n))
    src = tomllib.loads((ROOT / "tests/corpus" / name / "SOURCE").read_text())
    cp = CorpusProject(ctx, name, bases["bookworm"], index, files)
    py = "/usr/bin/python3"
    uv, uv_env = ctx.uv(), ctx.uv_env()
    req = w / f"{name}-requirements.txt"
    extras = sum([["--extra", e] for e in src.get("extras", [])], [])
    no_project = [] if cp.sources else ["--no-emit-project", "--no-emit-workspace"]
    sh([uv, "export", "--quiet", "--frozen", "--no-dev", "--no-editable", *no_project, *extras, "-o", req], cwd=cp.dir, env=uv_env)
    target, tgz = w / "uv-target", w / "uv-target.tar.gz"
    uv_cache = Path(uv_env["UV_CACHE_DIR"])

    def uv_cold(i):
        rmtree(target)
        tgz.unlink(missing_ok=True)
        uv_forget_built(uv_cache)
        # uv builds with the host's python3 (the bookworm base's 3.11 here), in its own build
        # isolation; its downloads are cached after the warm-up round, as imgbuild's are.
        r = run(f"{shlex.quote(uv)} pip install --quiet --no-deps --python {py} --target {target} -r {req} && "
                f"tar -C {target} -cf - . | pigz -p2 -{GZ_DEFAULT} > {tgz}", cwd=cp.dir, env=uv_env)
        r.bytes = tgz.stat().st_size if tgz.exists() else 0
        return r

    def ib_cold(i):
        corpus_cold(store, cp.dir)
        return cp.build(env)

    def ib_rebuild(i):
        corpus_cold(store, cp.dir, keep_built=True)
        return cp.build(env)

    log(f"corpus: {name}: {runs} rounds + a warm-up (imgbuild cold with sdists, uv + pigz, imgbuild rebuild)")
    res = rounds([("imgbuild cold", ib_cold), ("uv+pigz cold", uv_cold), ("imgbuild rebuild", ib_rebuild)], runs)
    ratio = stats(ratios(res["uv+pigz cold"], res["imgbuild cold"]))
    rows = []
    for what, how in [("imgbuild cold", "layers and built wheels forgotten; wheels and sdists in the store"),
                      ("uv+pigz cold", f"`uv pip install --target` with uv's built wheels removed from its cache + `tar | pigz -p2 -{GZ_DEFAULT}` (imgbuild's default level)"),
                      ("imgbuild rebuild", "layers forgotten, built wheels kept")]:
        rs = res[what]
        st = secs(rs)
        rows.append([what] + time_cells(st) + [fmt_s(cpu(rs)["median"]), fmt_b(rs[-1].bytes),
                     str(rs[-1].sdists) if hasattr(rs[-1], "sdists") else "—", how])
        S.result(f"{name} {what}", {"seconds": st, "cpu_seconds": cpu(rs), "bytes": rs[-1].bytes,
                                    "sdists_built": getattr(rs[-1], "sdists", None)})
    S.result(f"{name} uv_over_imgbuild", ratio)
    S.table(f"The largest lock with sdists: {name} ({cp.packages} packages, {built[name]['sdists_built']} sdists built), Debian bookworm",
            ["what"] + TIME_HEADER + ["CPU time", "compressed output", "sdists built", ""], rows,
            f"Rounds alternate the tools; the first is a warm-up. uv / imgbuild time per round, median: {fmt_x(ratio)} "
            "(> 1: imgbuild is faster). imgbuild builds each sdist in runc inside the target's root filesystem; uv builds "
            "with the host's interpreter (the same CPython 3.11 as the base), without a container.")
    S.target("rebuild after the first build builds 0 sdists", f"{res['imgbuild rebuild'][-1].sdists} sdists",
             all(r.sdists == 0 for r in res["imgbuild rebuild"]))


def empty_wheel_cache(store, project, bases):
    """An empty wheel cache: the store forgets every download (wheels, sdists, index pages), every
    wheel it built and every layer; it keeps only what it learnt from the base image and the base's
    own blobs (not downloads: they come from the local base layout), and the unpacked build root."""
    blobs = set()
    for b in bases:
        blobs |= {f.name for f in (Path(b) / "blobs/sha256").iterdir()}
    prune_store(store, BASE_FACTS | {"blobs", "build-roots", "tmp", ".lock"}, blobs)
    rmtree(project / ".imgbuild")


def section_downloads(S, ctx):
    """Issue 18: cold builds from an empty wheel cache, downloads included, against uv with an
    empty cache, on the same index."""
    import tomllib
    runs = ctx.runs
    index = host_index() or sh([sys.executable, "-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"]).stdout.strip()
    uv = ctx.uv()
    uv_cache = ctx.work / "uv-cache-empty"
    uv_env = dict(ctx.uv_env(), UV_CACHE_DIR=str(uv_cache), UV_INDEX_URL=index, UV_DEFAULT_INDEX=index)
    py = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    projects = []
    fx = ctx.fixture()
    projects.append(("job-agent api", fx.packages, fx.project, fx.store, [fx.base], fx.requirements,
                     lambda: fx.build(), "uv.lock from fixtures/job-agent/make-lock.sh"))
    name = "open-deep-research"
    try:
        files = corpus_files_host(index)
        w = ctx.work / "downloads"
        w.mkdir(parents=True, exist_ok=True)
        base = w / ".bases" / "debian-bookworm"
        if not (base / "index.json").exists():
            sh([ROOT / "fixtures/base/make-debian-python.sh", "--suite", "bookworm", "--import", f"{base}:bookworm"],
               env=dict(os.environ, IMGBUILD=IMGBUILD))
        cp = CorpusProject(ctx, name, base, index, files)
        cstore = w / "store"
        cenv = dict(os.environ, IMGBUILD_CACHE=str(cstore), SOURCE_DATE_EPOCH=EPOCH)
        req = w / f"{name}-requirements.txt"
        src = tomllib.loads((ROOT / "tests/corpus" / name / "SOURCE").read_text())
        extras = sum([["--extra", e] for e in src.get("extras", [])], [])
        no_project = [] if cp.sources else ["--no-emit-project", "--no-emit-workspace"]
        sh([uv, "export", "--quiet", "--frozen", "--no-dev", "--no-editable", *no_project, *extras, "-o", req], cwd=cp.dir, env=uv_env)
        projects.append((name, cp.packages, cp.dir, cstore, [base], req, lambda: cp.build(cenv),
                         "the largest lock of the real-world corpus (tests/corpus), with two sdists"))
    except BenchError as e:
        S.note(f"**{name}:** not measured: {e}")

    rows, data = [], {}
    for what, packages, project, store, bases, req, build, how in projects:
        target, tgz = ctx.work / "uv-target-empty", ctx.work / "uv-target-empty.tar.gz"

        def ib(i, project=project, store=store, bases=bases, build=build):
            empty_wheel_cache(store, project, bases)
            return build()

        def uvp(i, req=req, project=project):
            rmtree(target)
            rmtree(uv_cache)
            tgz.unlink(missing_ok=True)
            r = run(f"{shlex.quote(uv)} pip install --quiet --no-deps --python {py} --target {target} -r {req} && "
                    f"tar -C {target} -cf - . | pigz -p2 -{GZ_DEFAULT} > {tgz}", cwd=project, env=uv_env)
            r.bytes = tgz.stat().st_size if tgz.exists() else 0
            return r

        log(f"downloads: {what} ({packages} packages): {runs} rounds + a warm-up, empty caches each round")
        res = rounds([("imgbuild", ib), ("uv+pigz", uvp)], runs)
        ratio = stats(ratios(res["uv+pigz"], res["imgbuild"]))
        d = {"packages": packages}
        for tool in ("imgbuild", "uv+pigz"):
            rs = res[tool]
            bb, wb = bound(rs)
            d[tool] = {"seconds": secs(rs), "cpu_seconds": cpu(rs), "bound_seconds": bb, "wall_over_bound": wb,
                       "rss_mib": rss(rs), "bytes": rs[-1].bytes}
            rows.append([f"{what}: {tool}", str(packages)] + time_cells(secs(rs)) + [fmt_s(cpu(rs)["median"])] + bound_cells(rs)
                        + [fmt_b(rs[-1].bytes), fmt_x(ratio) if tool == "uv+pigz" else "—",
                           how if tool == "imgbuild" else f"`uv pip install --no-deps --target` of `uv export`, empty UV_CACHE_DIR, + `tar | pigz -p2 -{GZ_DEFAULT}`"])
        d["uv_over_imgbuild"] = ratio
        d["imgbuild_timings"] = timing_breakdown(res["imgbuild"])
        data[what] = d
        S.result(what, d)
    S.table("Cold builds from an empty wheel cache, downloads included",
            ["what", "packages"] + TIME_HEADER + ["CPU time"] + BOUND_HEADER + ["compressed output", "imgbuild speed-up (pairs)", ""], rows,
            f"Every round empties both caches first: imgbuild's store keeps only what it knows of the base image (its "
            f"facts and its own blobs, from the local base layout) and the unpacked build root; uv's cache directory is "
            f"removed. Both fetch from the same index ({'the host index' if host_index() else 'the default index'}); imgbuild "
            f"takes the lock's file URLs (with 8 parallel downloads), uv resolves the exported pins through the index's "
            f"pages. Both build the lock's sdists (imgbuild in runc inside the target's root filesystem, uv with the "
            f"host's CPython 3.11, the base's version). Rounds alternate the tools; the first is a warm-up (page cache, "
            f"connections), not counted. {BOUND_NOTE} Downloads make the wall time mostly network time: the bound is a "
            f"CPU bound only.")
    for what, d in data.items():
        bd = d["imgbuild_timings"]
        S.table(f"Where an empty-cache imgbuild build of {what} spends its time (`--json` timings)",
                ["phase"] + TIME_HEADER + ["share"], breakdown_rows("cold", bd, d["imgbuild"]["seconds"]["median"]),
                "`layers` includes the downloads and the sdist builds: the lock's wheels are fetched (8 at a time) while "
                "the sdists build, each wheel is installed (its metadata read) on its download worker as soon as it is "
                "stored and checked, and the python layer is written once all are there.")


def section_sbom(S, ctx):
    runs = ctx.runs
    fx = ctx.fixture()
    toml = fx.project / "imgbuild.toml"
    on_text = toml.read_text()
    if "[defaults]\n" not in on_text:
        raise BenchError("the fixture's imgbuild.toml has no [defaults] table")
    off_text = on_text.replace("[defaults]\n", "[defaults]\nsbom = false\nprovenance = false\n", 1)

    cold, noop = fx.steps_with(toml)

    try:
        log(f"sbom: {runs} rounds + a warm-up (cold with and without SBOM + provenance, no-op with)")
        res = rounds([("cold, sbom = false, provenance = false", cold(off_text)), ("cold, with SBOM + provenance", cold(on_text)),
                      ("no-op, with SBOM + provenance", noop(on_text))], runs)
        # The documents of the last build (with): their sizes, from the layout.
        toml.write_text(on_text)
        fx.build()
        lay = fx.project / ".imgbuild/oci"
        index = json.loads((lay / "index.json").read_text())
        sizes = {}
        for m in index["manifests"]:
            tag = m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            if not tag.startswith("sha256-"):
                continue
            listed = json.loads((lay / "blobs/sha256" / m["digest"].split(":")[1]).read_text())
            for d in listed["manifests"]:
                man = json.loads((lay / "blobs/sha256" / d["digest"].split(":")[1]).read_text())
                payload = man["layers"][0]
                sizes[d["artifactType"]] = {"payload_bytes": payload["size"], "manifest_bytes": d["size"]}
    finally:
        toml.write_text(on_text)
        fx.restore()
    with_, without = res["cold, with SBOM + provenance"], res["cold, sbom = false, provenance = false"]
    ratio = stats(ratios(with_, without))
    added = (ratio["median"] - 1) * 100
    rows = []
    for what, how in [("cold, with SBOM + provenance", "the default: SPDX SBOM + SLSA provenance referrers"),
                      ("cold, sbom = false, provenance = false", "both opted out in [defaults]"),
                      ("no-op, with SBOM + provenance", "nothing changed: the SBOM comes from the store's cache")]:
        rs = res[what]
        st = secs(rs)
        sb = [r.json.get("timings", {}).get("sbom", 0.0) for r in rs]
        rows.append([what] + time_cells(st) + [fmt_s(statistics.median(sb)), how])
        S.result(what, {"seconds": st, "sbom_phase_seconds": stats(sb)})
    S.table(f"The job-agent api image ({fx.packages} locked packages) with and without its supply-chain documents",
            ["what"] + TIME_HEADER + ["`sbom` phase (median)", ""], rows,
            "Rounds alternate the two settings; the first round is a warm-up. Cold: empty layer cache and output layout, "
            "warm wheel cache, a base seen before (as in the api section). The `sbom` phase is the build's own timing of "
            "making both documents (METADATA of every distribution and the dpkg status, kept by the store when each layer "
            "was written or first read, so a base seen before is not read again).")
    size_rows = [[t, fmt_b(v["payload_bytes"]), f"{v['manifest_bytes']} B"] for t, v in sorted(sizes.items())]
    S.table("Their sizes (uncompressed JSON)", ["artifact type", "document", "artifact manifest"], size_rows,
            "One SBOM and one provenance per image manifest; listed in the layout by the referrers index tagged sha256-<digest>.")
    S.result("sizes", sizes)
    S.result("with_over_without", ratio)
    S.target("SBOM + provenance add ≤ 5 % to a cold api build", f"{added:+.1f} % (median of per-round ratios {ratio['median']:.3f})", added <= 5.0)



class PlatformBuildah(Buildah):
    """The api section's buildah, on one platform's python3 base from the two-platform layout
    (`--platform`, the base copied for that architecture)."""

    def __init__(self, ctx, fx, layout, arch):
        self.layout, self.arch = layout, arch
        self.BASE = f"localhost/bench-base-{arch}:bookworm"
        self.TAG = f"localhost/bench-api-{arch}:latest"
        super().__init__(ctx, fx)
        self.cmd = self.cmd[:2] + ["--platform", f"linux/{arch}"] + self.cmd[2:]

    def storage(self, driver):
        (self.dir / "storage.conf").write_text(
            f'[storage]\ndriver = "{driver}"\ngraphroot = "{self.dir / "root"}"\nrunroot = "{self.dir / "run"}"\n')
        sh(["skopeo", "copy", "-q", "--override-arch", self.arch, f"oci:{self.layout}:py",
            f"containers-storage:{self.BASE}"], env=self.env)


def section_platforms(S, ctx):
    runs = ctx.runs
    fx = ctx.fixture()
    work = ctx.work / "platforms"
    rmtree(work)
    work.mkdir(parents=True)
    # The bases: python3 for both architectures from the Debian archive, one index, built once.
    bp = work / "bases-project"
    bp.mkdir()
    (bp / "imgbuild.toml").write_text('[images.py]\nplatforms = ["linux/amd64", "linux/arm64"]\n'
                                      'base = { debian = "bookworm", packages = ["python3"] }\ncmd = ["python3"]\n')
    layout = work / "bases"
    log("platforms: python3 bases for amd64 and arm64 from the Debian archive (one index)")
    sh([IMGBUILD, "-q", "build", "py", "--output", f"oci:{layout}:py"], cwd=bp,
       env=dict(os.environ, IMGBUILD_CACHE=str(work / "bases-store"), SOURCE_DATE_EPOCH=EPOCH))
    toml = fx.project / "imgbuild.toml"
    orig = toml.read_text()
    based = orig.replace('base = "oci:../.bases/debian-python3:bookworm"', f'base = "oci:{layout}:py"')
    one = based
    two = based.replace('platform = "linux/amd64"', 'platforms = ["linux/amd64", "linux/arm64"]')
    if based == orig or two == based:
        raise BenchError("the fixture's imgbuild.toml no longer has the base or platform line this section replaces")

    cold, noop = fx.steps_with(toml)

    try:
        log(f"platforms: {runs} rounds + a warm-up (one platform cold, two platforms cold, two platforms no-op)")
        res = rounds([("one platform (linux/amd64), cold", cold(one)), ("two platforms (linux/amd64 + linux/arm64), cold", cold(two)),
                      ("two platforms, no-op", noop(two))], runs)
        last = res["two platforms (linux/amd64 + linux/arm64), cold"][-1].json
    finally:
        toml.write_text(orig)
        fx.restore()
    two_r, one_r = res["two platforms (linux/amd64 + linux/arm64), cold"], res["one platform (linux/amd64), cold"]
    ratio = stats(ratios(two_r, one_r))
    rows = []
    for what, how in [("one platform (linux/amd64), cold", "`platform = \"linux/amd64\"`: one image manifest"),
                      ("two platforms (linux/amd64 + linux/arm64), cold", "`platforms = [...]`: an index of two manifests; the app layer one blob for both"),
                      ("two platforms, no-op", "nothing changed: every layer of both platforms from the cache")]:
        st = secs(res[what])
        rows.append([what] + time_cells(st) + [how])
        S.result(what, {"seconds": st})
    S.table(f"The api image ({fx.packages} locked packages), warm wheel cache", ["what"] + TIME_HEADER + [""], rows,
            "Cold: empty layer cache and output layout, the wheels of both platforms in the wheel cache (the warm-up "
            "round fetched them), the same two-platform base layout for both settings. Rounds alternate the settings.")
    S.result("two_over_one", ratio)
    S.result("platforms_of_last", [p.get("platform") for p in last.get("platforms", [])])
    S.target("two-platform cold build ≤ 1.6× the one-platform build", f"{ratio['median']:.2f}× (median of per-round ratios)",
             ratio["median"] <= 1.6)

    # buildah: the same Dockerfile, once per platform (the arm64 RUN steps under qemu).
    notes = []
    bh_rows = []
    try:
        times = {}
        for arch in ["amd64", "arm64"]:
            log(f"platforms: buildah bud --platform linux/{arch} ({runs} cold runs)")
            bh = PlatformBuildah(ctx, fx, layout, arch)
            try:
                toml.write_text(orig)
                bh.cold()
                bh.build()  # warm-up: fills the pip/uv caches for this platform
                rs = []
                for _ in range(runs):
                    bh.cold()
                    rs.append(bh.build())
                times[arch] = rs
            finally:
                bh.close()
        both = [a.seconds + b.seconds for a, b in zip(times["amd64"], times["arm64"])]
        ib_two = [r.seconds for r in two_r]
        for arch in ["amd64", "arm64"]:
            st = secs(times[arch])
            bh_rows.append([f"buildah bud --platform linux/{arch}, cold"] + time_cells(st))
            S.result(f"buildah {arch} cold", {"seconds": st})
        st = stats(both)
        bh_rows.append(["buildah, both platforms (sum of the two builds)"] + time_cells(st))
        S.result("buildah both cold", {"seconds": st})
        S.result("buildah_both_over_imgbuild_two", stats([b / a for a, b in zip(ib_two, both)]))
        S.table("buildah, the same multi-stage Dockerfile per platform (warm pip/uv caches)", ["what"] + TIME_HEADER, bh_rows,
                f"buildah both / imgbuild two-platform cold: {statistics.median([b / a for a, b in zip(ib_two, both)]):.2f}× "
                "(median over rounds paired by index). buildah's arm64 RUN steps (pip, uv) run under qemu-user-static; "
                "imgbuild runs nothing of the arm64 image to build it.")
    except Exception as e:  # noqa: BLE001 — a peer that cannot run here is reported, not fatal
        notes.append(f"buildah could not build the arm64 stage here: {str(e).splitlines()[-1][:400]}")
        S.note("**buildah:** " + notes[-1])
    finally:
        toml.write_text(orig)


def host_debian_mirror():
    """The Debian mirror apt uses here (make-debian-python.sh's find_mirror), or DEBIAN_MIRROR."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    script = ROOT / "fixtures/base/make-debian-python.sh"
    p = sh(f"source <(sed -n '/^find_mirror()/,/^}}/p' {shlex.quote(str(script))}); find_mirror")
    return p.stdout.strip()


def layout_layer_sizes(layout, tag):
    """Compressed sizes of the layers of layout:tag (its index → manifest)."""
    index = json.loads((Path(layout) / "index.json").read_text())
    m = next(d for d in index["manifests"] if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.loads((Path(layout) / "blobs/sha256" / m["digest"].split(":")[1]).read_text())
    return [l["size"] for l in manifest["layers"]]


def section_debian(S, ctx):
    """A base from the Debian archive vs debootstrap + base import; a libpq5 layer vs buildah's RUN apt-get."""
    runs = ctx.runs
    work = ctx.work / "debian"
    rmtree(work)
    work.mkdir(parents=True)
    mirror = host_debian_mirror()
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, IMGBUILD_DEBIAN_MIRROR=mirror)

    # 1. The python3 base.
    proj = work / "archive-base"
    proj.mkdir()
    (proj / "imgbuild.toml").write_text('[images.base]\nbase = { debian = "bookworm", packages = ["python3"] }\ncmd = ["python3"]\n')
    store = work / "archive-store"

    def ib_cold(i):
        rmtree(store)
        rmtree(proj / ".imgbuild")
        (proj / "imgbuild.lock").unlink(missing_ok=True)
        r = run([IMGBUILD, "-q", "build", "base"], cwd=proj, env=dict(env, IMGBUILD_CACHE=str(store)))
        r.bytes = sum(layout_layer_sizes(proj / ".imgbuild/oci", "base"))
        return r

    def ib_warm(i):
        # The packages (and the lock) are kept; the base's layer is unpacked and compressed again.
        rmtree(store / "layers")
        rmtree(proj / ".imgbuild")
        r = run([IMGBUILD, "-q", "build", "base"], cwd=proj, env=dict(env, IMGBUILD_CACHE=str(store)))
        r.bytes = sum(layout_layer_sizes(proj / ".imgbuild/oci", "base"))
        return r

    ds_cache = work / "debootstrap-cache"
    ds_store = work / "debootstrap-store"

    def debootstrap(cache):
        root = work / "debootstrap-root"
        out = work / "debootstrap-layout"
        sh(["rm", "-rf", root, out])
        if not cache:
            rmtree(ds_cache)
        ds_cache.mkdir(exist_ok=True)
        rmtree(ds_store)
        cmd = (f"debootstrap --variant=minbase --include=python3 --cache-dir={shlex.quote(str(ds_cache))} bookworm "
               f"{shlex.quote(str(root))} {shlex.quote(mirror)} >/dev/null && "
               f"rm -rf {root}/var/cache/apt/* {root}/var/lib/apt/lists/* && "
               f"{shlex.quote(IMGBUILD)} -q base import {shlex.quote(str(root))} --output oci:{shlex.quote(str(out))}:base")
        r = run(cmd, env=dict(env, IMGBUILD_CACHE=str(ds_store)))
        r.bytes = sum(layout_layer_sizes(out, "base"))
        sh(["rm", "-rf", root])
        return r

    log(f"debian: {runs} rounds + a warm-up (archive base vs debootstrap + base import, cold and warm)")
    res = rounds([("imgbuild archive base cold", ib_cold), ("debootstrap + base import cold", lambda i: debootstrap(False)),
                  ("imgbuild archive base warm", ib_warm), ("debootstrap + base import warm", lambda i: debootstrap(True))], runs)
    pkgs = sum(1 for l in (proj / "imgbuild.lock").read_text().splitlines() if l.startswith("name = "))
    rows, data = [], {"archive_base_packages": pkgs}
    for what, base, how in [
        ("imgbuild archive base cold", None, "`base = { debian = \"bookworm\", packages = [\"python3\"] }`: empty store, no lock (index, packages, unpack, gzip)"),
        ("debootstrap + base import cold", "imgbuild archive base cold", "`debootstrap --variant=minbase --include=python3` (empty package cache) + `imgbuild base import` (gzip)"),
        ("imgbuild archive base warm", None, "packages in the store and pinned: unpack + gzip again"),
        ("debootstrap + base import warm", "imgbuild archive base warm", "debootstrap with its package cache (`--cache-dir`) + `imgbuild base import`")]:
        rs = res[what]
        st = secs(rs)
        ratio = stats(ratios(rs, res[base])) if base else None
        rows.append([what] + time_cells(st) + [fmt_s(cpu(rs)["median"]), fmt_b(rs[-1].bytes), fmt_x(ratio) if ratio else "—", how])
        data[what] = {"seconds": st, "cpu_seconds": cpu(rs), "bytes": rs[-1].bytes, "ratio_peer_over_imgbuild": ratio}
    S.table(f"A Debian bookworm python3 base ({pkgs} packages from the archive)",
            ["what"] + TIME_HEADER + ["CPU time", "image (gzip)", "imgbuild speed-up (pairs)", ""], rows,
            "Same mirror (the host's apt source) for both; rounds alternate the tools, the warm-up round is not counted. "
            "debootstrap runs the packages' maintainer scripts and installs apt; imgbuild writes the files and dpkg status "
            "and reproduces the few script effects a base needs (README: A base from the archive).")

    # 2. Adding libpq5 to the debootstrap base.
    base = work / "bases" / "debian-python3"
    sh([ROOT / "fixtures/base/make-debian-python.sh", "--import", f"{base}:bookworm"], env=dict(os.environ, IMGBUILD=IMGBUILD))
    lp = work / "libpq5"
    lp.mkdir()
    (lp / "imgbuild.toml").write_text(f'[images.t]\nbase = "oci:{base}:bookworm"\n\n[[images.t.layers]]\nname = "system"\n'
                                      'debian = { packages = ["libpq5"] }\n')
    lp_store = work / "libpq5-store"

    def ib_libpq(i):
        rmtree(lp_store)
        rmtree(lp / ".imgbuild")
        (lp / "imgbuild.lock").unlink(missing_ok=True)
        r = run([IMGBUILD, "-q", "build", "t", "--json"], cwd=lp, env=dict(env, IMGBUILD_CACHE=str(lp_store)), capture=True)
        r.bytes = sum(l["size"] for l in imgbuild_json(r).get("layers", []))
        return r

    steps = [("imgbuild libpq5 layer cold", ib_libpq)]
    peer, peer_note = None, ""
    if shutil.which("buildah"):
        bdir = work / "buildah"
        bdir.mkdir()
        (bdir / "containers.conf").write_text(
            '[containers]\nnetns = "host"\ndefault_ulimits = ["nofile=1024:1024"]\n'
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
        (bdir / "storage.conf").write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{bdir / "root"}"\nrunroot = "{bdir / "run"}"\n')
        benv = dict(os.environ, CONTAINERS_CONF=str(bdir / "containers.conf"), CONTAINERS_STORAGE_CONF=str(bdir / "storage.conf"))
        (bdir / "ctx").mkdir()
        (bdir / "ctx/Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nRUN apt-get update -q && apt-get install -y -q --no-install-recommends libpq5 "
                                              "&& rm -rf /var/lib/apt/lists/*\n")
        sh(["skopeo", "copy", "-q", f"oci:{base}:bookworm", "containers-storage:localhost/debian-base:bookworm"], env=benv)

        def bh(i):
            sh(["buildah", "rmi", "-f", "localhost/bench-libpq5"], env=benv, check=False)
            sh(["buildah", "rmi", "--prune"], env=benv, check=False)
            r = run(["buildah", "bud", "--quiet", "--layers", "--isolation", "chroot", "--pull=never", "--build-arg",
                     "BASE=localhost/debian-base:bookworm", "-t", "localhost/bench-libpq5", bdir / "ctx"], env=benv)
            # The added layer as skopeo writes it to an OCI layout (gzip, like imgbuild's).
            out = bdir / "copy"
            rmtree(out)
            sh(["skopeo", "copy", "-q", "containers-storage:localhost/bench-libpq5", f"oci:{out}:t"], env=benv)
            r.bytes = layout_layer_sizes(out, "t")[-1]
            return r
        steps.append(("buildah RUN apt-get install libpq5", bh))
        peer = "buildah RUN apt-get install libpq5"
        peer_note = ("buildah: `buildah bud --layers --isolation chroot`, overlay storage, host netns; `RUN apt-get update && apt-get "
                     "install --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*`; its bytes are the added layer "
                     "as `skopeo copy` writes it to an OCI layout (gzip). ")
    else:
        S.note("**libpq5 peer:** buildah is not installed here, so the libpq5 layer has no peer in this run.")
    try:
        log("debian: libpq5 layer rounds")
        res2 = rounds(steps, runs)
        rows = []
        for what, rs in res2.items():
            st = secs(rs)
            ratio = stats(ratios(rs, res2["imgbuild libpq5 layer cold"])) if what == peer else None
            rows.append([what] + time_cells(st) + [fmt_s(cpu(rs)["median"]), fmt_b(rs[-1].bytes), fmt_x(ratio) if ratio else "—"])
            data[what] = {"seconds": st, "cpu_seconds": cpu(rs), "bytes": rs[-1].bytes, "ratio_peer_over_imgbuild": ratio}
        S.table("Adding libpq5 to the debootstrap bookworm python3 base",
                ["what"] + TIME_HEADER + ["CPU time", "bytes added", "imgbuild speed-up (pairs)"], rows,
                "imgbuild: a `debian = { packages = [\"libpq5\"] }` layer, empty store and no lock (release, index, "
                "5 packages, unpack, gzip); its bytes are the gzip layer. " + peer_note)
    finally:
        if peer:
            sh(["buildah", "rmi", "--all", "--force"], env=benv, check=False)
            mounts = [l.split()[1] for l in open("/proc/self/mounts")]
            for m in sorted((m for m in mounts if m.startswith(str(bdir) + "/")), key=len, reverse=True):
                subprocess.run(["umount", "-l", m], capture_output=True)
    for k, v in data.items():
        S.result(k, v)


def section_bytecode(S, ctx):
    """bytecode = true (issue 15): container start to first import with and without pycs, user
    1000, read-only root, in runc; and what compiling costs a cold build, against uv's
    --compile-bytecode of the same install."""
    runs = max(ctx.runs, 10)
    fx = ctx.fixture()
    toml = fx.project / "imgbuild.toml"
    toml_text = toml.read_text()
    scripts = 'scripts = ["alembic", "celery", "uvicorn"] }'
    if scripts not in toml_text:
        raise BenchError("the fixture's python layer table changed; update section_bytecode")
    with_bc = toml_text.replace(scripts, scripts[:-2] + ", bytecode = true }")
    unchecked = toml_text.replace(scripts, scripts[:-2] + ', bytecode = { invalidation = "unchecked-hash" } }')
    imports = "import fastapi, sqlalchemy, alembic, celery"
    try:
        bundles = {}
        for key, text in [("without", toml_text), ("with", with_bc), ("unchecked", unchecked)]:
            toml.write_text(text)
            out = ctx.work / f"bytecode-{key}"
            rmtree(out)
            sh([IMGBUILD, "-q", "build", "api", "--output", f"oci:{out}:api"], cwd=fx.project, env=fx.env)
            b = ctx.work / f"bytecode-bundle-{key}"
            rmtree(b)
            sh(["umoci", "unpack", "--image", f"{out}:api", b])
            cfg = json.loads((b / "config.json").read_text())
            cfg["process"]["terminal"] = False
            cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
            cfg["process"]["args"] = ["python3", "-c", imports]
            cfg["root"]["readonly"] = True
            (b / "config.json").write_text(json.dumps(cfg))
            bundles[key] = b
            warm(b / "rootfs")
        n = [0]

        def start(key):
            def f(i):
                n[0] += 1
                cid = f"imgbuild-bench-bytecode-{os.getpid()}-{n[0]}"
                try:
                    return run(["runc", "run", "--bundle", bundles[key], cid])
                finally:
                    subprocess.run(["runc", "delete", "-f", cid], capture_output=True)
            return f

        log(f"bytecode: {runs} rounds + a warm-up of `runc run` ({imports}) without and with pycs")
        res = rounds([("without bytecode", start("without")), ("with bytecode", start("with")), ("unchecked", start("unchecked"))], runs)
        st_off, st_on, st_un = secs(res["without bytecode"]), secs(res["with bytecode"]), secs(res["unchecked"])
        ratio = stats(ratios(res["without bytecode"], res["with bytecode"]))
        ratio_un = stats(ratios(res["without bytecode"], res["unchecked"]))
        S.table(f"Container start to first import: `python3 -c '{imports}'`",
                ["image"] + TIME_HEADER + ["speed-up (pairs)"],
                [["without bytecode"] + time_cells(st_off) + ["—"],
                 ["with bytecode = true (checked-hash)"] + time_cells(st_on) + [fmt_x(ratio)],
                 ["with invalidation = \"unchecked-hash\""] + time_cells(st_un) + [fmt_x(ratio_un)]],
                "`runc run` of the api image (three builds: no bytecode, `bytecode = true`, unchecked-hash pycs) unpacked by umoci, as user 1000 with a read-only root (the server's settings), "
                "wall time from the start of runc to the end of the process; rounds alternate the two images. Speed-up = "
                "time without / time with, per pair. The fixture's Debian base ships its standard library without pycs, so "
                "both images compile the stdlib modules they import at every start: the difference is the install's pycs alone.")
        S.result("start_without", {"seconds": st_off})
        S.result("start_with", {"seconds": st_on, "ratio_without_over_with": ratio})
        S.result("start_unchecked", {"seconds": st_un, "ratio_without_over_with": ratio_un})

        # Build cost: a cold imgbuild build (wheels in the store) with and without bytecode, and uv's
        # install into a --target directory with and without --compile-bytecode (warm uv cache).
        uv, py = ctx.uv(), ("/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable)
        target = ctx.work / "uv-target-bytecode"
        uv_env = ctx.uv_env()

        def ib(text):
            def f(i):
                toml.write_text(text)
                fx.cold()
                return fx.build()
            return f

        def uvi(compile_):
            def f(i):
                rmtree(target)
                return run([uv, "pip", "install", "--quiet"] + (["--offline"] if i else []) + (["--compile-bytecode"] if compile_ else [])
                           + ["--python", py, "--target", target, "-r", fx.requirements], env=uv_env)
            return f

        log(f"bytecode: {ctx.runs} rounds + a warm-up of cold builds with and without bytecode, imgbuild and uv")
        bres = rounds([("imgbuild", ib(toml_text)), ("imgbuild bytecode = true", ib(with_bc)),
                       ("uv pip install --target", uvi(False)), ("uv pip install --target --compile-bytecode", uvi(True))], ctx.runs)
        ib_cost = [a.seconds - b.seconds for a, b in zip(bres["imgbuild bytecode = true"], bres["imgbuild"])]
        uv_cost = [a.seconds - b.seconds for a, b in zip(bres["uv pip install --target --compile-bytecode"], bres["uv pip install --target"])]
        cost_ratio = stats(u / i for u, i in zip(uv_cost, ib_cost))
        rows = []
        for what in ["imgbuild", "imgbuild bytecode = true", "uv pip install --target", "uv pip install --target --compile-bytecode"]:
            rs = bres[what]
            rows.append([what] + time_cells(secs(rs)) + [fmt_s(cpu(rs)["median"])])
        rows.append(["compiling, imgbuild (with − without, per round)"] + time_cells(stats(ib_cost)) + ["—"])
        rows.append(["compiling, uv (with − without, per round)"] + time_cells(stats(uv_cost)) + ["—"])
        S.table("What compiling costs a build", ["what"] + TIME_HEADER + ["CPU time"], rows,
                "imgbuild: a cold api build (empty layer cache and compile cache, warm wheel store); with bytecode the base is "
                "linked from the store's shared build root (unpacked first: cold drops it) and the install's sources compiled by the image's python3 in runc (one fresh interpreter per fixed "
                "chunk of 250 sources, as many at once as there are CPUs). uv: `uv pip install --offline --target` of the "
                f"exported lock with the host's {py} (warm uv cache), with and without `--compile-bytecode` (timestamp pycs, "
                "uv's own worker pool). uv's install is not an image: compare the compile rows. "
                f"Compile-cost ratio uv / imgbuild (pairs): {fmt_x(cost_ratio)}.")
        S.result("build", {k: {"seconds": secs(v), "cpu_seconds": cpu(v)} for k, v in bres.items()})
        S.result("compile_cost", {"imgbuild": stats(ib_cost), "uv": stats(uv_cost), "ratio_uv_over_imgbuild": cost_ratio})
    finally:
        toml.write_text(toml_text)
        fx.restore()



class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of a registry that answers `rate` of the requests with
    a fault before forwarding: 503, 500, or the connection closed without an answer. Bodies are
    forwarded whole (a bench stand-in for tests/common/faultproxy.rs, which also cuts bodies)."""

    def __init__(self, upstream, rate, seed=7):
        import http.server, http.client, threading
        rng = random.Random(seed)
        lock = threading.Lock()
        self.faults = 0
        proxy = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                with lock:
                    roll, kind = rng.random(), rng.choice(["503", "500", "drop"])
                if roll < rate:
                    proxy.faults += 1
                    if kind == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(int(kind))
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                c = http.client.HTTPConnection("127.0.0.1", upstream, timeout=600)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                hdrs["Host"] = f"127.0.0.1:{proxy.port}"
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() in ("connection", "transfer-encoding", "content-length"):
                        continue
                    self.send_header(k, v)
                # A HEAD answer keeps the upstream's Content-Length (a blob's size).
                length = r.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                self.close_connection = True
                c.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def section_sharedcache(S, ctx):
    """Runner A (empty store) builds and pushes the api with `--cache`; runner B (another empty
    store, its package index a closed port) builds and pushes the same commit from the shared
    cache; runner B without the shared cache rebuilds everything. Then B again through a proxy
    that faults 10 % of the cache's requests."""
    fx = ctx.fixture()
    runs = ctx.runs
    w = ctx.work / "sharedcache"
    rmtree(w)
    w.mkdir(parents=True)
    closed = f"http://127.0.0.1:{free_port()}/simple"

    def runner(store, repo, cache, index=None, name="x"):
        env = dict(fx.env, IMGBUILD_CACHE=str(w / store), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                   IMGBUILD_HTTP_TIMEOUT="5", IMGBUILD_CACHE_TIMEOUT="2")
        if index:
            env.update(UV_INDEX_URL=index, PIP_INDEX_URL=index, UV_DEFAULT_INDEX=index)
        rmtree(w / store)
        toml = (fx.project / "imgbuild.toml").read_text()
        text = toml.replace('repository = "registry.example.com/acme/job-agent-api"', f'repository = "{repo}"')
        (fx.project / "imgbuild.toml").write_text(text)
        try:
            argv = [IMGBUILD, "-q", "build", "api", "--push", "--json"] + (["--cache", cache] if cache else ["--cache", ""])
            r = run(argv, cwd=fx.project, env=env, capture=True)
        finally:
            (fx.project / "imgbuild.toml").write_text(toml)
        r.json = imgbuild_json(r)
        sc = r.json.get("shared_cache") or {}
        r.up = r.json.get("uploaded_bytes", 0) + sc.get("uploaded_bytes", 0)
        r.down = sc.get("downloaded_bytes", 0) + sc.get("record_bytes", 0)
        r.sources = [l.get("source") for l in r.json.get("layers", [])]
        return r

    keys = ["A cold", "B shared cache", "B empty, no shared cache", "B shared cache, 10% faults"]
    res = {k: [] for k in keys}
    digests, sources, faults = set(), {k: set() for k in keys}, 0
    log(f"sharedcache: {runs} rounds + a warm-up, each on a new docker-registry")
    for i in range(runs + 1):
        reg = Registry(w)
        proxy = FaultyProxy(reg.port, 0.10, seed=i + 1)
        try:
            host = f"127.0.0.1:{reg.port}"
            repo, cache = f"{host}/acme/job-agent-api", f"{host}/acme/imgbuild-cache"
            got = {}
            got["A cold"] = runner("a", repo, cache, name="a")
            got["B shared cache"] = runner("b", repo, cache, index=closed)
            got["B empty, no shared cache"] = runner("c", repo, None)
            # Through the proxy the cache is on another registry host: its hits are downloaded.
            got["B shared cache, 10% faults"] = runner("d", repo, f"127.0.0.1:{proxy.port}/acme/imgbuild-cache", index=closed)
            faults += proxy.faults
        finally:
            proxy.stop()
            reg.stop()
        for k, r in got.items():
            digests.add(r.json.get("digest"))
            sources[k].add(",".join(map(str, r.sources)))
        if i > 0:
            for k, r in got.items():
                res[k].append(r)
        log(f"  round {i + 1}/{runs + 1}" + (" (warm-up)" if i == 0 else "") + ": "
            + ", ".join(f"{k} {fmt_s(r.seconds)}" for k, r in got.items()))
    rows, data = [], {}
    for k in keys:
        rs = res[k]
        st = secs(rs)
        ratio = stats([r.seconds / a.seconds for r, a in zip(rs, res["A cold"])])
        up = ", ".join(sorted({fmt_b(r.up) if r.up else "0 B" for r in rs}))
        down = ", ".join(sorted({fmt_b(r.down) if r.down else "0 B" for r in rs}))
        rows.append([k] + time_cells(st) + [f"{ratio['median']:.3f}× ({ratio['min']:.3f}–{ratio['max']:.3f})", up, down, " / ".join(sorted(sources[k]))])
        data[k] = {"seconds": st, "over_a_cold": ratio, "uploaded_bytes": [r.up for r in rs], "downloaded_bytes": [r.down for r in rs]}
    phases = {}
    for k in ("base", "layers", "verify", "image", "sbom", "write", "push", "shared_cache"):
        xs = [r.json.get("timings", {}).get(k, 0.0) for r in res["B shared cache"]]
        phases[k] = statistics.median(xs) if xs else 0.0
    data["b_shared_phases_s"] = phases
    b_sc = [r.json.get("shared_cache") or {} for r in res["B shared cache"]]
    data["b_shared_hits"] = {k: sorted({x.get(k, 0) for x in b_sc}) for k in ("hits", "base_hits", "record_hits")}
    vs_empty = stats(ratios(res["B empty, no shared cache"], res["B shared cache"]))
    data["empty_over_shared"] = vs_empty
    data["same_digest"] = len(digests) == 1
    data["faults_injected"] = faults
    for k, v in data.items():
        S.result(k, v)
    S.table("Fresh runners: the api image built and pushed (`imgbuild build api --push --json`), each with an empty store",
            ["runner"] + TIME_HEADER + ["time / A cold (pairs)", "uploaded (image + cache)", "downloaded from the cache (layers + records)", "layer sources"], rows,
            "Each round starts a new docker-registry (127.0.0.1, filesystem storage); the first round is a warm-up. A cold: "
            "empty store (wheels downloaded from the host's package index), writes the cache records. B shared cache: "
            "another empty store, package index a closed port, the cache and the image on the same registry (hits are "
            "HEAD-skipped, not downloaded; the base's listings, SBOM facts and Python target come from the cache, so its "
            "bytes are not read — they are still copied from the base layout into the store). B empty: an empty store without the shared cache (wheels downloaded, every layer "
            "rebuilt; the push HEAD-skips). The faults row reaches the cache through a proxy answering 10 % of requests "
            f"with 503/500 or a dropped connection ({faults} faults injected); on another host, its hits are downloaded and "
            f"checked. All runs gave {'one digest' if len(digests) == 1 else 'DIFFERENT digests: ' + ', '.join(map(str, digests))}. "
            f"B empty / B shared (pairs): {fmt_x(vs_empty)}. Runner B's phases (median s, its --json timings): "
            + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
            + "; its shared-cache hits: " + ", ".join(f"{k} {'/'.join(map(str, v))}" for k, v in data["b_shared_hits"].items()) + ".")
    b = data["B shared cache"]
    S.target("runner B's build+push ≤ 0.2× runner A's cold build+push (issue 17)",
             f"{b['over_a_cold']['median']:.3f}×, {max(b['uploaded_bytes'])} B up, {max(b['downloaded_bytes'])} B of records down",
             b["over_a_cold"]["median"] <= 0.2 and max(b["uploaded_bytes"]) == 0)


SECTION_ORDER = ["layers", "api", "rebuilds", "push", "memory", "scaling", "downloads", "corpus", "sbom", "debian", "bytecode",
                 "sharedcache", "platforms"]
SECTIONS = {
    "layers": (section_layers, "Layer throughput: imgbuild vs tar | pigz, gzip, zstd",
               "imgbuild's gzip (parallel, deterministic) and zstd layers against the usual command lines, on identical inputs, with output sizes."),
    "api": (section_api, "The api image: imgbuild vs uv + pigz vs buildah",
            "The job-agent fixture's api image (Python dependencies from uv.lock + the app) on a Debian bookworm python3 base: "
            "a cold build with the wheels already downloaded, a no-op rebuild and a one-file change."),
    "rebuilds": (section_rebuilds, "Rebuilds", "imgbuild rebuilds of the api image: nothing changed, one app file changed, one dependency bumped."),
    "push": (section_push, "Push: imgbuild vs skopeo copy", "Pushing the same OCI layout to the same kind of loopback registry: fresh, unchanged, one layer changed; time and bytes."),
    "memory": (section_memory, "Peak memory", "Peak resident memory of the whole imgbuild process."),
    "downloads": (section_downloads, "Cold builds from an empty wheel cache: imgbuild vs uv",
                  "Issue 18: the job-agent api and the corpus's largest lock (open-deep-research) built with nothing "
                  "downloaded yet, against `uv pip install --target` with an empty uv cache, same index."),
    "corpus": (section_corpus, "The real-world corpus: sdists built in the target",
               "Every tests/corpus project's uv.lock built onto a Debian python3 base (issue 11), and the largest lock with sdists against uv building the same sdists."),
    "bytecode": (section_bytecode, "Bytecode: start-up with pycs, and what compiling costs",
                 "`bytecode = true` on the api image's python layer: container start to first import, user 1000, read-only "
                 "root, with and without the pycs; and the build cost of compiling against uv's `--compile-bytecode`."),
    "sharedcache": (section_sharedcache, "Shared cache: fresh CI runners", "Issue 17: a layer cache shared through the registry — a fresh runner's build+push vs a cold one, bytes each way, with faults."),
    "scaling": (section_scaling, "Scaling with layer size and file count", "Whether cost grows linearly with bytes, memory stays flat and an unchanged layer costs the same at any size; what a no-op rebuild costs per unchanged file at 1k, 10k and 100k files."),
    "sbom": (section_sbom, "SBOM and provenance: what they cost",
             "The api image built cold with its SPDX SBOM and SLSA provenance (the default) against the same build with both "
             "opted out; the documents' sizes."),
    "platforms": (section_platforms, "Two platforms: linux/amd64 + linux/arm64 in one index",
                  "Issue 14: the api image built for two platforms (one index) vs one platform, on python3 bases built from "
                  "the Debian archive for each architecture; and buildah building the same Dockerfile once per platform "
                  "(the arm64 RUN steps under qemu-user-static)."),
    "debian": (section_debian, "Debian packages: a base from the archive, a libpq5 layer",
               "A bookworm python3 base built from the archive vs debootstrap + `imgbuild base import`; adding libpq5 vs a "
               "`RUN apt-get install` layer in buildah."),
}


def machine():
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def imgbuild_version():
    """The commit the binary is built from, and whether its sources differ from it."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock", "build.rs"],
                           capture_output=True, text=True).stdout.strip()
    return (head or "?") + (" with uncommitted changes to src" if dirty else "")


def cleanup():
    for x in list(LIVE):
        try:
            x.close()
        except Exception:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per figure (>= 5 for a report)")
    ap.add_argument("--only", default=",".join(SECTION_ORDER), help="comma-separated sections: " + ",".join(SECTION_ORDER))
    ap.add_argument("--md", help="write the markdown report here")
    ap.add_argument("--json", help="write (merge) the JSON results here")
    ap.add_argument("--note", default=os.environ.get("IMGBUILD_BENCH_NOTE"), help="a line shown at the top of the report, e.g. the machine's state (default: $IMGBUILD_BENCH_NOTE)")
    ap.add_argument("--perf", action="store_true", help="also profile one cold api build with perf")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--no-install", action="store_true", help="fail instead of installing missing peers")
    ap.add_argument("--render", action="store_true", help="only re-render --md from the --json file")
    a = ap.parse_args()
    if a.render:
        if not (a.json and a.md):
            sys.exit("--render needs --json and --md")
        Path(a.md).write_text(render(json.loads(Path(a.json).read_text())) + "\n")
        return
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    for s in only:
        if s not in SECTIONS:
            sys.exit(f"unknown section {s!r}; sections: {', '.join(SECTION_ORDER)}")
    if not Path(IMGBUILD).exists():
        sys.exit(f"{IMGBUILD} not found: run `cargo build --release` first")
    if a.runs < 5:
        log(f"warning: --runs {a.runs} < 5: figures are for checking the instrument, not a report")
    ensure_peers(only, not a.no_install)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(prefix="imgbuild-bench-")
    atexit.register(lambda: None if a.keep else rmtree(work))
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))
    ctx = Ctx(a.runs, work, not a.no_install, a.perf)
    report = {"sections": {}}
    if a.json and Path(a.json).exists() and set(only) != set(SECTION_ORDER):
        try:
            report = json.loads(Path(a.json).read_text())
            report.setdefault("sections", {})
        except ValueError:
            pass
    if a.note:
        report["note"] = a.note
    report["generated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    failed = []
    for key in only:
        fn, title, intro = SECTIONS[key]
        S = Section(key, title, intro)
        S.d.update(generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), machine=machine(), imgbuild=imgbuild_version(), runs=a.runs)
        log(f"section {key}")
        t = time.monotonic()
        try:
            fn(S, ctx)
        except Exception as e:
            failed.append(key)
            S.d["error"] = "".join(traceback.format_exception_only(type(e), e)) if isinstance(e, BenchError) else traceback.format_exc()
            log(f"section {key} FAILED: {S.d['error'][:2000]}")
        finally:
            cleanup_section = [x for x in LIVE if isinstance(x, Registry)]
            for x in cleanup_section:
                x.stop()
        S.d["wall_s"] = time.monotonic() - t
        log(f"section {key}: {S.d['wall_s']:.0f} s")
        report["sections"][key] = S.d
        if a.json:  # written after each section: a later failure keeps what was measured
            Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
        if a.md:
            Path(a.md).write_text(render(report) + "\n")
    md = render(report)
    print(md)
    log(f"done in {time.monotonic() - T0:.0f} s" + (f"; failed sections: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
