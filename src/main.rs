fn main() {
    std::process::exit(imgbuild::cli::main());
}
