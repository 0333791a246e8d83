#!/usr/bin/env python3
"""Materialise the corpus data: each project's lock (and the pyproject.toml files it needs) at
the commit its SOURCE names, with the index placeholders put in.

The lock files themselves are third-party data and are not committed to this repository; only
tests/corpus/<name>/SOURCE is (repository, commit, path, sha256 of the lock). This script writes
<data>/<name>/<files> (default data dir: $IMGBUILD_CORPUS_DATA or ~/.cache/imgbuild-corpus).

Usage: tests/corpus/fetch-data.py [--mirror DIR] [--data DIR] [--sources] [NAME...]
  --mirror DIR  DIR/<owner>+<name>/repo (or DIR/<owner>+<name>) is a git directory of the
                repository; otherwise it is cloned (bare, blobless) from GitHub into
                <data>/.git/<owner>+<name>.
  --sources     also write the project's source tree (the lock's directory at the commit, from
                `git archive`) to <data>/<name>/src, so the tests install the project itself and
                its workspace members the way `uv sync --no-editable` does
Every lock is checked against the sha256 in SOURCE before the placeholders go in:
  registry = "<index>"              -> registry = "@INDEX@"
  url = "https://<files-host>/packages/..." -> url = "@FILES@/packages/..."
The tests fill them in at run time from the index pip uses.
"""
import argparse, hashlib, os, pathlib, re, subprocess, sys, tomllib

HERE = pathlib.Path(__file__).resolve().parent


def data_dir(arg):
    if arg:
        return pathlib.Path(arg)
    env = os.environ.get("IMGBUILD_CORPUS_DATA")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache/imgbuild-corpus"


def placeholders(text):
    # Only index-style registries (".../simple") and files-host URLs ("https://<files-host>/packages/")
    text = re.sub(r'registry = "https://[^"]+/simple/?"', 'registry = "@INDEX@"', text)
    return re.sub(r'url = "https://[^/"]+/packages/', 'url = "@FILES@/packages/', text)


def gitdir(repo_url, mirror, data):
    slug = repo_url.removeprefix("https://github.com/").replace("/", "+")
    if mirror:
        for cand in (pathlib.Path(mirror) / slug / "repo", pathlib.Path(mirror) / slug):
            if (cand / "HEAD").is_file() or (cand / ".git").exists():
                return cand
    dest = data / ".git" / slug
    if not dest.exists():
        subprocess.run(["git", "clone", "--bare", "--filter=blob:none", repo_url + ".git", str(dest)], check=True)
    return dest


def write_sources(g, commit, lockdir, dest):
    """The lock's directory at `commit`, file by file (`git ls-tree` + `git cat-file --batch`:
    a mirror may lack some large blobs, which are left out and counted), then the placeholder
    lock written over the real one; written to a temporary directory and renamed."""
    import shutil
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tree = f"{commit}:{lockdir}" if lockdir else commit
    listing = subprocess.run(["git", "--git-dir", str(g), "ls-tree", "-r", "-z", "--full-tree", tree],
                             check=True, capture_output=True).stdout
    entries = []
    for rec in listing.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, kind, oid = meta.split()
        if kind == b"blob":
            entries.append((mode.decode(), oid.decode(), path.decode()))
    batch = subprocess.run(["git", "--git-dir", str(g), "cat-file", "--batch"], check=True, capture_output=True,
                           input="".join(f"{oid}\n" for _, oid, _ in entries).encode()).stdout
    pos, missing = 0, 0
    for mode, oid, path in entries:
        nl = batch.index(b"\n", pos)
        header = batch[pos:nl].split()
        pos = nl + 1
        if header[-1] == b"missing":
            missing += 1
            continue
        size = int(header[2])
        body = batch[pos:pos + size]
        pos += size + 1
        if path.startswith("/") or ".." in path.split("/"):
            raise SystemExit(f"{path}: outside the tree")
        out = tmp / path
        out.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            out.symlink_to(body.decode())
        else:
            out.write_bytes(body)
            if mode == "100755":
                out.chmod(0o755)
    if missing:
        print(f"  {missing} files the mirror does not hold were left out of {dest}", file=sys.stderr)
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dest.parent / "uv.lock", tmp / "uv.lock")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror")
    ap.add_argument("--data")
    ap.add_argument("--sources", action="store_true")
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    data = data_dir(a.data)
    names = a.names or sorted(p.parent.name for p in HERE.glob("*/SOURCE"))
    bad = 0
    for name in names:
        src = tomllib.loads((HERE / name / "SOURCE").read_text())
        g = gitdir(src["repository"], a.mirror, data)
        lockdir = os.path.dirname(src["lock"])
        out = data / name
        out.mkdir(parents=True, exist_ok=True)
        for rel in ["uv.lock"] + src.get("files", []):
            path = os.path.join(lockdir, rel) if lockdir else rel
            body = subprocess.run(["git", "--git-dir", str(g), "show", f"{src['commit']}:{path}"],
                                  check=True, capture_output=True).stdout
            if rel == "uv.lock":
                got = hashlib.sha256(body).hexdigest()
                if got != src["lock_sha256"]:
                    print(f"{name}: {path} at {src['commit']} has sha256 {got}, SOURCE says {src['lock_sha256']}", file=sys.stderr)
                    bad += 1
                    continue
                body = placeholders(body.decode()).encode()
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(body)
        if a.sources:
            write_sources(g, src["commit"], lockdir, out / "src")
        print(f"{name}: {out}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
