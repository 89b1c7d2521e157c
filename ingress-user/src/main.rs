//! `ingress`: the agent (`run`) and its admin clients (`stats`, `routes`).

/// mimalloc instead of glibc's malloc: the proxy allocates and frees per request (header
/// maps, URIs, bodies' frames); under load glibc's malloc/free/consolidate took ~10 % of
/// the agent's samples (`perf record` on the keep-alive workload).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    ingress::app::main(ingress::cli::parse())
}
