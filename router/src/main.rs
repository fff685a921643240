//! The `switchyard` binary; everything lives in the library (`switchyard::cli`).

/// jemalloc, whose background thread hands the memory a flag load frees back to the kernel
/// (glibc kept it: 1,004 bytes a tenant against 63; see BENCHMARKS.md). Its build-time
/// defaults are in `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
