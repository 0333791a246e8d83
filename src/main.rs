fn main() {
    // Die quietly on a closed pipe (`imgbuild base list | head`), as Unix tools do.
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(imgbuild::cli::main());
}
