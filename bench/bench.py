#!/usr/bin/env python3
"""imgbuild benchmarks: each figure is a median over >= 5 runs, compared pair by pair with a
named peer in the same run. Writes markdown tables to stdout (and --md FILE) and JSON (--json FILE).

Usage: bench/bench.py [--runs N] [--only SECTION,...] [--md BENCHMARKS.md] [--json bench/results.json]
Sections: layers, noop (more are added by later issues). Needs a release build (`cargo build --release`).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMGBUILD = os.environ.get("IMGBUILD", str(ROOT / "target/release/imgbuild"))
CACHE = Path(os.environ.get("IMGBUILD_BENCH_CACHE", Path.home() / ".cache/imgbuild-bench"))


def run(cmd, cwd=None, env=None, shell=False):
    """Runs cmd; returns (seconds, max RSS in MiB of the process tree's largest process)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark command failed: {cmd}\n{err}")
    return dt, usage.ru_maxrss / 1024


def rss_of_tree(cmd, cwd=None, env=None):
    """Peak RSS (MiB) of any process in a shell pipeline, via GNU time on each stage is overkill:
    RUSAGE_CHILDREN of a fresh interpreter gives the largest descendant's peak."""
    code = "import resource,subprocess,sys; subprocess.run(sys.argv[1], shell=True, check=True, stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", code, cmd], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def stats(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


class Report:
    def __init__(self):
        self.sections = []
        self.data = {}

    def table(self, title, note, rows):
        """rows: (label, stats-dict-of-seconds, extra text)"""
        lines = [f"### {title}", "", note, "", "| what | median | min | max | runs | |", "|---|---:|---:|---:|---:|---|"]
        for label, s, extra in rows:
            lines.append(f"| {label} | {fmt(s['median'])} | {fmt(s['min'])} | {fmt(s['max'])} | {s['runs']} | {extra} |")
        self.sections.append("\n".join(lines) + "\n")
        self.data[title] = [{"what": l, **s, "note": e} for l, s, e in rows]

    def text(self, s):
        self.sections.append(s + "\n")


def fmt(sec):
    return f"{sec*1000:.1f} ms" if sec < 1 else f"{sec:.2f} s"


def paired(a_cmd, b_cmd, runs, setup=None, cwd=None, env=None):
    """Alternates a and b runs; returns (a times, b times, per-pair ratios b/a, a rss, b rss)."""
    a, b, ratios, arss, brss = [], [], [], [], []
    for i in range(runs + 1):
        if setup:
            setup()
        ta, ra = run(a_cmd, cwd=cwd, env=env, shell=isinstance(a_cmd, str))
        if setup:
            setup()
        tb, rb = run(b_cmd, cwd=cwd, env=env, shell=isinstance(b_cmd, str))
        if i == 0:
            continue  # warm-up pair: page cache, binaries
        a.append(ta); b.append(tb); ratios.append(tb / ta); arss.append(ra); brss.append(rb)
    return a, b, ratios, arss, brss


def tree():
    """~160 MB of many small files: numpy and pandas installed by pip (cached)."""
    t = CACHE / "tree"
    if not (t / ".done").exists():
        shutil.rmtree(t, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(t), "numpy==2.4.6", "pandas==3.1.1", "python-dateutil", "six", "tzdata"], check=True, stderr=subprocess.DEVNULL)
        (t / ".done").write_text("")
    return t


def bigfile():
    """One 500 MB file of mixed compressible content (deterministic)."""
    f = CACHE / "big" / "blob.bin"
    if not f.exists():
        f.parent.mkdir(parents=True, exist_ok=True)
        import random
        r = random.Random(42)
        chunk = bytes(r.getrandbits(8) for _ in range(1 << 16))
        with open(f, "wb") as out:
            for i in range(500 * 16):
                out.write(chunk[: 1 << 15])
                out.write((b"the quick brown fox %08d jumps\n" % i) * 1024)
        # trim/pad to 500 MiB exactly is unnecessary; size is reported
    return f.parent


def project_for(src, compression):
    """A project whose root holds `src` (imgbuild reads only inside its project): a config
    file next to it, one per compression. Returns (root, config file)."""
    root = Path(src).parent
    cfg = root / f"bench-{Path(src).name}-{compression}.toml"
    cfg.write_text(
        f'[defaults]\ncompression = "{compression}"\nplatform = "linux/amd64"\n'
        f'[images.t]\nbase = "scratch"\n[[images.t.layers]]\nname = "tree"\nfiles = [{{ from = "{Path(src).name}", to = "/t" }}]\n'
    )
    return root, cfg


def section_layers(rep, runs):
    for label, src in [("~160 MB tree of many small files (numpy + pandas)", tree()), ("one 500 MB file", bigfile())]:
        size = sum(f.stat().st_size for f in Path(src).rglob("*") if f.is_file())
        rows, notes = [], []
        for comp, peer_label, peer in [
            ("gzip", "tar | pigz -p2 -6", f"tar -C {src} -cf - . | pigz -p2 -6 > /dev/null"),
            ("gzip", "tar | gzip -6", f"tar -C {src} -cf - . | gzip -6 > /dev/null"),
            ("zstd", "tar | zstd -3 -T2", f"tar -C {src} -cf - . | zstd -q -3 -T2 > /dev/null"),
        ]:
            with tempfile.TemporaryDirectory() as w:
                root, cfg = project_for(src, comp)
                store = Path(w) / "store"
                env = dict(os.environ, IMGBUILD_CACHE=str(store), SOURCE_DATE_EPOCH="0")
                def fresh():
                    shutil.rmtree(store, ignore_errors=True)
                    shutil.rmtree(root / ".imgbuild", ignore_errors=True)
                a, b, ratios, arss, _ = paired([IMGBUILD, "-q", "--config", str(cfg), "build", "t"], peer, runs, setup=fresh, cwd=root, env=env)
                r = statistics.median(ratios)
                rows.append((f"imgbuild {comp}", stats(a), f"{size/statistics.median(a)/1e6:.0f} MB/s, peak RSS {max(arss):.0f} MiB"))
                rows.append((peer_label, stats(b), f"{size/statistics.median(b)/1e6:.0f} MB/s; imgbuild is **{r:.2f}×** as fast (median of pairs)"))
                rep.data.setdefault("ratios", {})[f"layers/{label}/{comp} vs {peer_label}"] = r
        rep.table(f"Layer build throughput: {label}", f"{size/1e6:.0f} MB input, cold layer cache, warm page cache. imgbuild time includes hashing inputs and writing the blob to its store; the peers write to /dev/null.", rows)


def section_noop(rep, runs):
    with tempfile.TemporaryDirectory() as w:
        root, cfg = project_for(tree(), "gzip")
        env = dict(os.environ, IMGBUILD_CACHE=str(Path(w) / "store"))
        cmd = [IMGBUILD, "-q", "--config", str(cfg), "build", "t"]
        run(cmd, cwd=root, env=env)
        xs = [run(cmd, cwd=root, env=env)[0] for _ in range(runs + 1)][1:]
        rss = rss_of_tree(" ".join(cmd), cwd=root, env=env)
        rep.table("No-op rebuild", f"The ~160 MB tree's image rebuilt with nothing changed (stat cache + layer cache). Target ≤ 100 ms. Peak RSS {rss:.0f} MiB.", [("imgbuild build (no-op)", stats(xs), "")])
        rep.data.setdefault("ratios", {})["noop/median_s"] = statistics.median(xs)


SECTIONS = {"layers": section_layers, "noop": section_noop}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--md")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not Path(IMGBUILD).exists():
        sys.exit(f"{IMGBUILD} not found: run `cargo build --release` first")
    rep = Report()
    import platform
    rep.text(f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; imgbuild at {IMGBUILD}.")
    for name in a.only.split(","):
        print(f"bench: {name} ...", file=sys.stderr)
        SECTIONS[name](rep, a.runs)
    md = "\n".join(rep.sections)
    print(md)
    if a.md:
        Path(a.md).write_text("# imgbuild benchmarks\n\nGenerated by `just bench` (bench/bench.py). Medians of ≥ 5 runs; ratios are medians of per-pair ratios measured in the same run.\n\n" + md)
    if a.json:
        Path(a.json).write_text(json.dumps(rep.data, indent=2))


if __name__ == "__main__":
    main()
