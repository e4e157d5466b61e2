//! The `xlb` command: argument parsing, logging and dispatch. `run` is the daemon
//! (`daemon/`); the other subcommands read a running xlb through its admin socket
//! (`admin/`). No packet code here.

mod admin;
mod daemon;
mod metrics;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use xlb::{
    abi::{AttachMode, ZeroCopy},
    control::config::DEFAULT_ADMIN_SOCKET,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// xlb: an L4 load balancer on AF_XDP for bare-metal Kubernetes ingress nodes.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve an interface: from a config file (--config), or from flags (--interface, --vip,
    /// --service).
    Run(Box<RunArgs>),
    /// Check a config file without running anything: every mistake, with its field path.
    Check {
        /// The file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Interfaces, queues, modes, workers, snapshot generation of a running xlb.
    Status(ClientArgs),
    /// Services of a running xlb.
    Service {
        #[command(subcommand)]
        what: ListOnly,
    },
    /// Backends of a running xlb: health, weight, share of the Maglev table, traffic.
    Backend {
        #[command(subcommand)]
        what: ListOnly,
    },
    /// Tracked flows of a running xlb.
    Conntrack {
        #[command(subcommand)]
        what: ConntrackCmd,
    },
    /// Maglev tables of a running xlb.
    Maglev {
        #[command(subcommand)]
        what: MaglevCmd,
    },
    /// Address pools of a running xlb: size, used, free.
    Pool {
        #[command(subcommand)]
        what: ListOnly,
    },
    /// BGP of a running xlb: its sessions, and the routes of its VIPs.
    Bgp {
        #[command(subcommand)]
        what: BgpCmd,
    },
    /// Print the CustomResourceDefinitions (LoadBalancerIPPool, L2AnnouncementPolicy) as YAML.
    Crds {
        /// Print instead the definitions of the Cilium kinds xlb serves
        /// (CiliumLoadBalancerIPPool, CiliumL2AnnouncementPolicy), written by xlb from
        /// Cilium's published names: for a cluster that keeps those objects after Cilium is
        /// gone. Never apply them where Cilium's own are installed.
        #[arg(long, conflicts_with = "metallb")]
        cilium: bool,
        /// Print instead the definitions of the MetalLB kinds xlb serves (IPAddressPool,
        /// L2Advertisement), written by xlb from MetalLB's published field names: for a
        /// cluster that keeps those objects after MetalLB is gone. Never apply them where
        /// MetalLB's own are installed.
        #[arg(long)]
        metallb: bool,
    },
    /// Write Cilium's and MetalLB's pool and announcement objects as xlb's kinds (YAML on
    /// stdout), each with what xlb's kinds cannot say; from files, or from the cluster.
    Migrate {
        /// Read these YAML files (several documents each); without any, read the cluster.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Kubeconfig for reading the cluster (default: in-cluster, then ~/.kube/config).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Kubernetes: allocate addresses to LoadBalancer Services from LoadBalancerIPPools and
    /// write them to the Services' status (one writer at a time, by Lease).
    Allocator(AllocatorArgs),
}

/// How to reach the Kubernetes API and what to serve there (`xlb allocator`, and
/// `xlb run --kubernetes`).
#[derive(clap::Args, Debug)]
struct KubeArgs {
    /// Kubernetes: kubeconfig to use (default: $KUBECONFIG, ~/.kube/config, or the pod's
    /// account).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes: namespace of xlb's Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "xlb-system")]
    namespace: String,
    /// Kubernetes: spec.loadBalancerClass that xlb serves.
    #[arg(long, default_value = xlb::k8s::service::DEFAULT_CLASS)]
    class: String,
    /// Kubernetes: also serve LoadBalancer Services that name no class.
    #[arg(long)]
    unclassed: bool,
}

/// `xlb allocator`.
#[derive(clap::Args, Debug)]
struct AllocatorArgs {
    #[command(flatten)]
    kube: KubeArgs,
    /// This instance's name, used as the Lease holder and in Events.
    #[arg(long, env = "NODE_NAME")]
    identity: String,
    /// Seconds the allocator Lease is valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
}

#[derive(Subcommand, Debug)]
enum ListOnly {
    /// List them.
    List(ClientArgs),
}

#[derive(Subcommand, Debug)]
enum BgpCmd {
    /// Each peer: BGP's and BFD's state, routes sent.
    Peers(ClientArgs),
    /// Each routed VIP: advertised or not, and why.
    Routes(ClientArgs),
}

#[derive(Subcommand, Debug)]
enum ConntrackCmd {
    /// List tracked flows (all workers).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only flows of this service (NAME, NAME/PROTO:PORT or VIP:PORT).
        #[arg(long)]
        service: Option<String>,
        /// Only flows from this client address.
        #[arg(long)]
        client_addr: Option<std::net::IpAddr>,
        /// Only flows on this backend address.
        #[arg(long)]
        backend: Option<std::net::IpAddr>,
        /// Most flows per worker.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Subcommand, Debug)]
enum MaglevCmd {
    /// A service's table: slots per backend and a sample of the first slots.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The service (NAME, NAME/PROTO:PORT or VIP:PORT).
        service: String,
    },
}

/// How to reach a running xlb and how to show the answer.
#[derive(clap::Args, Debug, Clone)]
struct ClientArgs {
    /// Admin socket of the running xlb.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_ADMIN_SOCKET)]
    socket: PathBuf,
    /// Output: a table for people, or JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// Output format of the client commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

/// Flags of `xlb run`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Config file (YAML): interfaces, pools, services, SNAT, health checks. Reloaded on
    /// SIGHUP and when the file changes.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with_all = ["interface", "vips", "services", "snat_addrs", "kubernetes"])]
    config: Option<PathBuf>,
    /// Take Services, EndpointSlices, pools and announcement policies from the Kubernetes
    /// API: this node joins the xlb members (a Lease of its own), announces the VIPs it is
    /// chosen for, and serves every LoadBalancer Service of --class.
    #[arg(long, conflicts_with_all = ["vips", "services"])]
    kubernetes: bool,
    /// Interface to serve (its MAC answers for the VIPs); several, comma-separated
    /// (`eno1,eno2`), each with its own workers: with --kubernetes, a VIP is announced on
    /// those an announcement policy's `interfaces` select.
    #[arg(long, short = 'i', value_name = "IF[,IF...]", required_unless_present = "config")]
    interface: Option<String>,
    /// A VIP to own (IPv4 or IPv6); repeat for more.
    #[arg(long = "vip", value_name = "ADDR", required_unless_present_any = ["config", "kubernetes"])]
    vips: Vec<String>,
    #[command(flatten)]
    kube: KubeArgs,
    /// With --kubernetes: this node's name (the DaemonSet sets NODE_NAME from spec.nodeName).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// With --kubernetes: do not run the address allocator here (another xlb or another
    /// controller writes the Services' addresses).
    #[arg(long)]
    no_allocator: bool,
    /// Failover: milliseconds between heartbeats to the other xlb nodes (0: none; with
    /// --kubernetes, VIPs then move only when a Lease expires). Standalone: the config's `ha`.
    #[arg(long, default_value_t = 50)]
    heartbeat_interval_ms: u64,
    /// Failover: heartbeats missed before a node is dead and its VIPs move.
    #[arg(long, default_value_t = 5)]
    heartbeat_dead_after: u32,
    /// Failover: a node that has not heard a majority for this long stops answering for its
    /// VIPs (less than interval x dead-after).
    #[arg(long, default_value_t = 150)]
    takeover_ms: u64,
    /// Failover: a file holding the cluster's shared key (at least 16 bytes, the same on
    /// every node): heartbeats are signed with it, and unsigned or forged ones are dropped.
    /// Standalone: the config's `ha.keyFile`.
    #[arg(long, value_name = "PATH")]
    heartbeat_key_file: Option<PathBuf>,
    /// With --kubernetes: milliseconds between renewals of this node's membership Lease.
    #[arg(long, default_value_t = 2000)]
    lease_renew_ms: u64,
    /// With --kubernetes: a member whose Lease has not changed for this long (on this node's
    /// clock) is gone, and its VIPs move.
    #[arg(long, default_value_t = 10_000)]
    lease_valid_ms: u64,
    /// Queues to serve, from 0 (default: every RX queue of the interface), on each interface.
    /// Fewer than an interface has is refused: the NIC spreads flows over all of them.
    #[arg(long)]
    queues: Option<u32>,
    /// Cores to pin workers to, in worker order (the first interface's queues, then the
    /// next's), comma-separated (default: worker i on core i mod the number of cores).
    #[arg(long, value_delimiter = ',', value_name = "CPU,...")]
    cores: Vec<usize>,
    /// UMEM frames per queue (2048 bytes each; at least twice --ring-size).
    #[arg(long, default_value_t = xlb::io::worker::DEFAULT_FRAMES)]
    frames: u32,
    /// Size of each AF_XDP ring (power of two).
    #[arg(long, default_value_t = 2048)]
    ring_size: u32,
    /// Most frames a worker takes from its RX ring at once.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Microseconds a worker keeps spinning after the last frame (heartbeats aside) before it
    /// sleeps in poll().
    #[arg(long, default_value_t = 500)]
    idle_spin_us: u64,
    /// Where the XDP program runs: native (in the driver), generic (skb path, any
    /// interface), or auto (native, falling back to generic with a warning).
    #[arg(long, value_enum)]
    xdp_mode: Option<AttachMode>,
    /// Zero-copy policy for the AF_XDP sockets.
    #[arg(long, value_enum)]
    zero_copy: Option<ZeroCopy>,
    /// Set the busy-poll socket options (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, budget = --batch).
    #[arg(long)]
    busy_poll: bool,
    /// Duplicate-address probes before a VIP is announced (0 disables detection).
    #[arg(long, default_value_t = 3)]
    dad_probes: u32,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 100)]
    dad_interval_ms: u64,
    /// Milliseconds to wait for an answer after the last probe.
    #[arg(long, default_value_t = 200)]
    dad_wait_ms: u64,
    /// Gratuitous ARP / unsolicited NA rounds sent when a VIP becomes owned.
    #[arg(long, default_value_t = 3)]
    garp_count: u32,
    /// Milliseconds between those rounds.
    #[arg(long, default_value_t = 250)]
    garp_interval_ms: u64,
    /// A service: PROTO:VIP:PORT=BACKEND:PORT[*WEIGHT],...[;mode=dsr|snat][;affinity=SECONDS]
    /// [;table=PRIME|auto] (IPv6 in brackets); repeat for more. The VIP must be one of --vip.
    /// mode: direct server return (default) or source NAT (needs --snat-addr); affinity:
    /// a client's new connections go to its previous backend for that long (ClientIP);
    /// table: Maglev table size, by default sized to the backends (over 100 slots each).
    #[arg(long = "service", value_name = "SPEC")]
    services: Vec<String>,
    /// A source address for SNAT services (`;mode=snat`): backends see connections from it
    /// and reply to it. xlb owns it like a VIP (probes, announces, answers ARP/NDP); one per
    /// address family at least for the SNAT services of that family; repeat for more ports.
    #[arg(long = "snat-addr", value_name = "ADDR")]
    snat_addrs: Vec<String>,
    /// Ports of each SNAT address that xlb allocates, split evenly among the workers.
    #[arg(long, value_name = "LOW-HIGH", default_value = "1024-65535")]
    snat_ports: String,
    /// Flows each worker's connection table is sized for, at most 67108864 (slots: the next
    /// power of two at or above 1.5 x N, 64 bytes each: 128 MiB per queue by default).
    #[arg(long, default_value_t = 1 << 20)]
    conntrack_capacity: usize,
    /// How long an idle flow is kept, NAME=SECONDS; repeat for more. Names: tcpSyn (60),
    /// tcpSynSnat (5: an unanswered SNAT SYN's port), tcpEstablished (21600), tcpClosing
    /// (10), udp (60), other (60).
    #[arg(long = "conntrack-timeout", value_name = "NAME=SECONDS")]
    conntrack_timeouts: Vec<String>,
    /// Where the flow tables and the SNAT table live (files on tmpfs, held by one xlb at a
    /// time), so that the next xlb on the interface takes over every flow and SNAT port:
    /// a restart, a kill -9 or an upgrade loses no connection. Default: /run/xlb/state/IFACE.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Keep the tables in this process only (a restart loses every SNAT connection).
    #[arg(long, conflicts_with = "state_dir")]
    no_state: bool,
    /// An upgrade in place: if another xlb holds the state directory, ask it to hand over.
    /// It stops forwarding and lets go of the queues and tables, but keeps the node's VIPs
    /// and membership for this one (its peers hold them); with --kubernetes it then waits
    /// for its own SIGTERM, standalone it exits. Without this flag, a second xlb waits for
    /// the first to exit.
    #[arg(long, conflicts_with = "no_state")]
    takeover: bool,
    /// Admin socket for `xlb status`, `xlb service list`, ... (default: the config's
    /// admin.socket, else /run/xlb/xlb.sock).
    #[arg(long, value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (default: the config's
    /// metrics.listen, else not served).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Write the final counters here as JSON when xlb stops.
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's own message on one line: what was wrong and with which argument,
            // without the usage block that follows it.
            let text = e.render().to_string();
            let what: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .filter(|l| !l.starts_with("tip:"))
                .collect();
            let line = what.join(" ");
            eprintln!("xlb: {} (see xlb --help)", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => daemon::run(*args),
        Command::Check { config } => daemon::check(&config),
        Command::Status(c) => admin::client(&c.socket, c.output == Output::Json, admin::Query::Status),
        Command::Service { what: ListOnly::List(c) } => {
            admin::client(&c.socket, c.output == Output::Json, admin::Query::Services)
        }
        Command::Backend { what: ListOnly::List(c) } => {
            admin::client(&c.socket, c.output == Output::Json, admin::Query::Backends)
        }
        Command::Pool { what: ListOnly::List(c) } => {
            admin::client(&c.socket, c.output == Output::Json, admin::Query::Pools)
        }
        Command::Bgp { what: BgpCmd::Peers(c) } => {
            admin::client(&c.socket, c.output == Output::Json, admin::Query::BgpPeers)
        }
        Command::Bgp { what: BgpCmd::Routes(c) } => {
            admin::client(&c.socket, c.output == Output::Json, admin::Query::BgpRoutes)
        }
        Command::Conntrack { what: ConntrackCmd::List { client, service, client_addr, backend, limit } } => {
            admin::client(
                &client.socket,
                client.output == Output::Json,
                admin::Query::Conntrack { service, client: client_addr, backend, limit },
            )
        }
        Command::Maglev { what: MaglevCmd::Show { client, service } } => {
            admin::client(&client.socket, client.output == Output::Json, admin::Query::Maglev { service })
        }
        Command::Crds { cilium, metallb } => {
            let y = match (cilium, metallb) {
                (true, _) => xlb::k8s::crds::cilium_crds_yaml(),
                (_, true) => xlb::k8s::foreign::metallb_crds_yaml(),
                _ => xlb::k8s::crds::crds_yaml(),
            };
            y.map(|y| print!("{y}")).map_err(Into::into)
        }
        Command::Allocator(a) => allocator(a),
        Command::Migrate { files, kubeconfig } => migrate(&files, kubeconfig.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<daemon::UsageError>() {
                for line in u.to_string().lines() {
                    eprintln!("xlb: {line}");
                }
                return ExitCode::from(2);
            }
            eprintln!("xlb: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn allocator(a: AllocatorArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = xlb::k8s::source::client(a.kube.kubeconfig.as_deref()).await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let settings = xlb::k8s::service::Settings {
            class: a.kube.class,
            unclassed: a.kube.unclassed,
            identity: a.identity,
            namespace: a.kube.namespace,
            lease_seconds: a.lease_seconds,
        };
        let mut task = tokio::spawn(xlb::k8s::controller::run_allocator(client, settings, stop_rx, Default::default()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::select! {
            r = &mut task => return r?,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: stopping");
        stop_tx.send(true).ok();
        // The allocator releases its Lease on the way out, so that another takes over at once.
        match tokio::time::timeout(Duration::from_secs(8), task).await {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("the allocator did not stop within 8 s"),
        }
    })
}

fn migrate(files: &[PathBuf], kubeconfig: Option<&std::path::Path>) -> anyhow::Result<()> {
    use xlb::k8s::migrate;
    let objects = if files.is_empty() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let client = xlb::k8s::source::client(kubeconfig).await?;
            migrate::read_cluster(&client).await.map_err(|e| anyhow::anyhow!("reading the cluster: {e}"))
        })?
    } else {
        let mut all = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            all.extend(migrate::read_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?);
        }
        all
    };
    let converted: Vec<migrate::Converted> = objects.iter().map(migrate::convert).collect();
    print!("{}", migrate::render(&converted).map_err(|e| anyhow::anyhow!(e))?);
    let exact = converted.iter().filter(|c| c.lost.is_empty()).count();
    let none = converted.iter().filter(|c| c.objects.is_empty()).count();
    eprintln!(
        "xlb migrate: objects read: {}; written exactly: {exact}; written with what xlb cannot say (see the comments): {}; not written: {none}",
        converted.len(),
        converted.len() - exact - none
    );
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal; files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
