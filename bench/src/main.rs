//! xlb-bench: the end-to-end benchmark harness. Reserved by the spine issue; the harness is
//! the benchmark issue's work.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the benchmark harness is not implemented yet (see the benchmark issue)")
}
