//! The `switchyard` binary; everything lives in the library (`switchyard::cli`).

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
