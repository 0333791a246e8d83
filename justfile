# Everyday commands. `just --list` shows them.

# Build the release binary
build:
    cargo build --release --locked

# The test suite (what CI runs after .ci/install-deps)
test:
    cargo test --locked

# Only the end-to-end tests (real registry, umoci, skopeo, runc; the README walkthrough)
e2e:
    cargo test --locked --test core --test registry --test walkthrough

# Benchmarks against named peers (installs missing ones: apt-get, uv in a temp venv); writes
# BENCHMARKS.md and bench/results.json. Sections: layers api rebuilds push memory scaling downloads corpus sbom debian
# bytecode sharedcache platforms (downloads needs the corpus data: tests/corpus/fetch-data.py [--mirror DIR])
bench runs="5":
    cargo build --release --locked
    python3 bench/bench.py --runs {{runs}} --md BENCHMARKS.md --json bench/results.json

# One benchmark section (e.g. `just bench-only api`), merged into BENCHMARKS.md and bench/results.json
bench-only section runs="5":
    cargo build --release --locked
    python3 bench/bench.py --runs {{runs}} --only {{section}} --md BENCHMARKS.md --json bench/results.json

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings

# Long reliability runs (CI runs short ones): 100 random SIGKILLs of a build, and 500 push+pull
# rounds (1000 operations) through a proxy injecting faults into 10% of requests
soak:
    IMGBUILD_SOAK_RUNS=100 cargo test --locked --test reliability -- --nocapture
    IMGBUILD_FAULT_RUNS=500 IMGBUILD_FAULT_SECONDS=1500 cargo test --locked --test faults pushes -- --nocapture

# Fuzz every target for `seconds` each (needs `cargo install cargo-fuzz`; stable works with RUSTC_BOOTSTRAP=1)
fuzz seconds="60":
    cd fuzz && for t in $(cargo fuzz list); do RUSTC_BOOTSTRAP=1 cargo fuzz run $t -- -max_total_time={{seconds}} -rss_limit_mb=2048 || exit 1; done

# The real-world corpus (tests/corpus, issue 11): every project's uv.lock built onto a Debian
# python3 base, verified and imported in runc (with the project itself when its sources are there).
# Needs the corpus data: `tests/corpus/fetch-data.py --sources [--mirror DIR]`; where GitHub is out
# of reach, IMGBUILD_CORPUS_GIT_MIRROR=DIR serves the locks' git sources from DIR/<owner>+<name>/repo
corpus:
    cargo test --locked --test corpus -- --ignored --nocapture --test-threads=1

# Two-platform builds (issue 14): the job-agent api as a linux/amd64 + linux/arm64 index on
# Debian-archive bases, each platform checked, the arm64 one smoke-tested under qemu-user-static
# (register it first: .ci/install-deps does, where the kernel allows)
platforms:
    cargo test --locked --test platforms -- --include-ignored --nocapture
