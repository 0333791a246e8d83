/// The allocator. mimalloc rather than glibc's malloc: a no-op rebuild of 100k files is stat
/// calls plus many small short-lived allocations, and mimalloc took a fifth off it (BENCHMARKS.md,
/// scaling). Its defaults trade memory for speed; `tune_allocator` takes that back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's option numbers (`mi_option_e` in libmimalloc-sys's
/// c_src/mimalloc/v3/include/mimalloc.h; the crate names only some of them).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// With its defaults mimalloc commits a whole arena up front and returns freed pages to the
/// system only after a delay, which raised the peak RSS of a 800 MB layer from 67 to 93 MiB.
/// Committing on demand and purging at once keeps it within the benchmarks' bound
/// (≤ 64 MiB for any layer size, BENCHMARKS.md). Without transparent huge pages: every 2 MiB page
/// mimalloc had asked for them stayed resident whole: 100k files peaked at 71 MiB with them and
/// 61 MiB without in a no-op rebuild (0.14-0.15 s either way, 7 paired rounds, 2026-12-06), at
/// 73-75 MiB and 61 MiB in a cold build.
/// mimalloc reads that option once, when it starts (before `main`: its first arena is already
/// advised for huge pages), so the process flag it would set is set here, as `MIMALLOC_ALLOW_THP=0`
/// would. `MIMALLOC_*` variables still win where a user sets them.
fn tune_allocator() {
    for (option, name, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        (MI_OPTION_ALLOW_THP, "MIMALLOC_ALLOW_THP", 0),
    ] {
        if std::env::var_os(name).is_none() {
            // SAFETY: mi_option_set only stores the value; it is read on later allocations.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: prctl with integer arguments only sets a flag of this process.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() {
    tune_allocator();
    // Die quietly on a closed pipe (`imgbuild base list | head`), as Unix tools do.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(imgbuild::cli::main());
}
