//! pktgen: xlb's AF_XDP traffic generator. Not built yet: the spine issue only reserves the
//! crate; the generator itself is the benchmark issue's work.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("pktgen is not implemented yet (see the benchmark issue)")
}
