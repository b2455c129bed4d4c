//! The `mqaudit` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

/// See Cargo.toml: glibc malloc keeps growing under the collector's large
/// per-cycle allocations; mimalloc gives the memory back.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mqaudit::cli::main()
}
