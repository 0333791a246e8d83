#!/usr/bin/env python3
"""Materialise the corpus data: each project's lock (and the pyproject.toml files it needs) at
the commit its SOURCE names, with the index placeholders put in.

The lock files themselves are third-party data and are not committed to this repository; only
tests/corpus/<name>/SOURCE is (repository, commit, path, sha256 of the lock). This script writes
<data>/<name>/<files> (default data dir: $IMGBUILD_CORPUS_DATA or ~/.cache/imgbuild-corpus).

Usage: tests/corpus/fetch-data.py [--mirror DIR] [--data DIR] [NAME...]
  --mirror DIR  DIR/<owner>+<name>/repo (or DIR/<owner>+<name>) is a git directory of the
                repository; otherwise it is cloned (bare, blobless) from GitHub into
                <data>/.git/<owner>+<name>.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror")
    ap.add_argument("--data")
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
        print(f"{name}: {out}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
