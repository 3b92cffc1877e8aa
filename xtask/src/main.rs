//! The `xtask` binary: all of it is the library's `main` (`lib.rs`).

fn main() -> std::process::ExitCode {
    xtask::main()
}
