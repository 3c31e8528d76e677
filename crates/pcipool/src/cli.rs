//! Command-line surface (clap derive). Arguments parse straight into the domain's types (addresses,
//! fabric device ids, node ids, access models, suites), so a bad value is a usage error (exit 2) before
//! any work starts, with clap's message naming the argument.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use pcipool_fabric::{DeviceOrHost, Fdid, NodeId};
use pcipool_pcie::Bdf;
use pcipool_pool::schedule::DeviceClass;
use pcipool_qualify::AccessModel;

/// Exit codes, shown in `--help` and in docs/cli.md.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (also when output is cut short by a closed pipe)
  1  runtime failure (I/O, unreadable system files, a tool that could not run)
  2  usage error (bad arguments)
  3  bad input data (malformed dump file, undecodable config space)
  4  not found (no such device)";

/// Pool PCIe devices across hosts joined by an NTB or PCIe switch fabric.
#[derive(Debug, Parser)]
#[command(name = "pcipool", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
    /// Where the controller's API is (for the commands that talk to it).
    #[command(flatten)]
    pub api: ApiArgs,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Table,
    /// JSON (schema in docs/json.md).
    Json,
}

/// Where to read a host from.
#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// Root of the sysfs tree to read (a fake tree in tests).
    #[arg(long, value_name = "PATH", default_value = "/sys", global = true)]
    pub sysfs_root: PathBuf,
    /// Root of the procfs tree (mount and route tables). Defaults to `proc` beside a non-default
    /// `--sysfs-root`, else /proc.
    #[arg(long, value_name = "PATH", global = true)]
    pub proc_root: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// List this host's PCI functions: class, names, driver, IOMMU group, NUMA node, link, BAR sizes,
    /// reset methods, and whether a function backs the root filesystem or the default route.
    Inventory {
        #[command(flatten)]
        host: HostArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Show everything pcipool decodes about one function of this host.
    Inspect {
        /// PCI address, e.g. 0000:03:00.0 or 03:00.0.
        bdf: Bdf,
        #[command(flatten)]
        host: HostArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Decode an `lspci -x`, `-xxx` or `-xxxx` hex dump (several devices per file; `-` for stdin).
    Decode {
        /// The dump file.
        file: PathBuf,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Decide, per device and access model, whether it may be pooled, and say why. Exit code: 0 when
    /// everything asked for passes (warnings allowed), 1 on warnings with --strict, 2 on failures.
    Qualify(QualifyArgs),
    /// The pool's hosts (`list`, from the API), or change one function of this host as the agent
    /// would. Exit code of a change: 0 done, 1 error, 3 refused (backs / or the default route, or
    /// outside the pool), 4 no such function, 5 busy (what holds it is printed), 6 timed out.
    Host(HostCommandArgs),
    /// The simulated fabric: inspect it, or drive a seeded workload of leases and faults against it.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Start the controller with a SQLite store and the simulated 4-host lab (agents in-process), serving
    /// the HTTP API; prints the address, an admin token and example commands.
    Dev(DevArgs),
    /// Run the controller: SQLite store in --data-dir, HTTP API, hosts reached through their agents
    /// (`pcipool agent`). Without --tokens it writes admin.token and agent.token into the data directory.
    Server(ServerArgs),
    /// Run a host's agent: reports the host's devices to the controller, carries out workflow steps
    /// (refusing stale fencing epochs) and heartbeats the leases the host borrows.
    Agent(pcipool_agent::process::AgentOptions),
    /// The pool's API: borrow, release, leases, devices, hosts, drains, workflows, audit.
    #[command(flatten)]
    Client(ClientCommand),
    /// Prove a pool before trusting it: run validation suites against the simulated lab and write a
    /// report. Exit code 1 when any check fails.
    Validate(ValidateArgs),
    /// Review a pool's whole PCIe system: hosts, endpoints, link budgets (oversubscription named),
    /// software paths and qualification with remedies. Writes review.html and review.json.
    Review(ReviewArgs),
    /// Relay one TCP connection to ADDR over stdin/stdout (what QEMU's guestfwd runs per connection).
    Relay {
        /// Where to connect, e.g. 127.0.0.1:7070.
        addr: String,
    },
    /// The VM lab: Linux guests under QEMU as the pool's hosts, the hypervisor as the fabric.
    #[command(subcommand)]
    Lab(pcipool_lab::command::LabCommand),
    /// Benchmarks that print ratios measured side by side in one run.
    #[command(subcommand)]
    Bench(pcipool_bench::Benchmark),
    /// Print the completion script for a shell (e.g. `pcipool completions bash >
    /// /etc/bash_completion.d/pcipool`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: pcipool_manual::Shell,
    },
    /// Write the man pages (pcipool.1 and one per subcommand) into a directory.
    Man {
        /// Where (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `pcipool host`: the pool's hosts, or an operation on this host and how to run it.
#[derive(Debug, clap::Args)]
pub struct HostCommandArgs {
    #[command(subcommand)]
    pub command: HostCommand,
    #[command(flatten)]
    pub host: HostArgs,
    /// Print the exact writes (path and value) in order; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Seconds one attribute write may take before it is abandoned as timed out.
    #[arg(long, value_name = "SECS", default_value_t = 10, global = true)]
    pub write_deadline: u64,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t, global = true)]
    pub output: OutputFormat,
}

/// Commands that talk to the controller's API ($PCIPOOL_URL with $PCIPOOL_TOKEN).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Borrow devices from the pool (talks to $PCIPOOL_URL with $PCIPOOL_TOKEN).
    #[command(group(clap::ArgGroup::new("what").required(true).multiple(true).args(["class", "device"])))]
    Borrow {
        /// Device class: nvme, gpu, nic, fpga.
        #[arg(long)]
        class: Option<DeviceClass>,
        /// One specific device (fabric device id, e.g. n1:0000:03:00.0).
        #[arg(long, value_name = "FDID")]
        device: Option<Fdid>,
        /// Borrower host (node id, e.g. n3).
        #[arg(long, value_name = "NODE")]
        host: NodeId,
        /// How many (all or nothing).
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Access model: lend, vf or shared.
        #[arg(long, default_value = "lend")]
        model: AccessModel,
        /// Lease duration in seconds.
        #[arg(long)]
        duration: Option<u64>,
        /// Shared model: how many borrowers the device may have at once (the first sharer decides;
        /// default 4, at most 64).
        #[arg(long, value_name = "N")]
        max_sharers: Option<u32>,
        /// Idempotency key: repeating the command with the same key while its leases are active prints
        /// those leases instead of borrowing again (safe retries from scripts).
        #[arg(long, value_name = "KEY")]
        request_id: Option<String>,
        /// Return as soon as the devices are assigned, without waiting for the lends; follow them with
        /// `pcipool workflow show ID --wait SECS`.
        #[arg(long)]
        no_wait: bool,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Release a lease.
    Release {
        /// Lease id.
        lease: u64,
    },
    /// Leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Pooled devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Take a device, or every device of a host, out of the pool (maintenance, or back to the lender's
    /// own use with --local). Busy devices are left alone and reported (exit code 1).
    Drain {
        /// Device (fabric device id) or host (node id, e.g. n1).
        target: DeviceOrHost,
        /// Give it back to the lender's own use instead of maintenance.
        #[arg(long)]
        local: bool,
    },
    /// Put a drained device, or every drained device of a host, back into the pool.
    Undrain {
        /// Device (fabric device id) or host (node id).
        target: DeviceOrHost,
    },
    /// Quarantined devices.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// Workflows.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `pcipool qualify`.
#[derive(Debug, clap::Args)]
pub struct QualifyArgs {
    /// Devices to qualify (default: every function).
    pub bdfs: Vec<Bdf>,
    /// Access models to judge (repeatable; default: lend, vf and shared).
    #[arg(long = "model", value_name = "lend|vf|shared")]
    pub models: Vec<AccessModel>,
    /// NTB adapter profile: a built-in name or a TOML file.
    #[arg(long, value_name = "FILE|NAME", default_value = "dolphin-pxh830-32g")]
    pub adapter_profile: String,
    /// The borrower's modules.alias, or its /lib/modules/<release> directory.
    #[arg(long, value_name = "PATH")]
    pub borrower_modules: Option<PathBuf>,
    /// DMA window the borrower will ask for (e.g. 256M, 1G).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = pcipool_describe::text::parse_size)]
    pub dma_window: u64,
    /// Pool policy file (TOML) with [[override]] entries.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The lender's NTB adapter, when it is not bound to an ntb_hw_* driver.
    #[arg(long, value_name = "BDF")]
    pub ntb_adapter: Option<Bdf>,
    #[command(flatten)]
    pub host: HostArgs,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t)]
    pub output: crate::qualify_cmd::ReportFormat,
    /// Treat warnings as failures of the run (exit 1).
    #[arg(long)]
    pub strict: bool,
}

/// `pcipool validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Suites to run (repeatable): cycles, reset, rebind, load, isolation, recovery, datapath
    /// (default: all).
    #[arg(long = "suite", value_name = "NAME")]
    pub suites: Vec<pcipool_validate::Suite>,
    /// Profile: `short` (3 cycles per device and model; what CI runs) or `long` (200: thousands of
    /// cycles on the lab).
    #[arg(long, default_value = "short")]
    pub profile: pcipool_validate::Profile,
    /// Assign/release cycles per device and access model (overrides the profile's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: Option<u32>,
    /// Only these devices (repeatable; fabric device ids).
    #[arg(long = "device", value_name = "FDID")]
    pub devices: Vec<Fdid>,
    /// Only the devices of these hosts (repeatable; node ids).
    #[arg(long = "host", value_name = "NODE")]
    pub hosts: Vec<NodeId>,
    /// Seed of the simulated run (the report records it; the same seed repeats the run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fabric description (default: the built-in 4-host lab).
    #[arg(long, value_name = "FILE")]
    pub fabric: Option<PathBuf>,
    /// Pool policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Write the report to FILE.json (JSON) or FILE.html (a self-contained page); repeatable.
    #[arg(long = "report", value_name = "FILE", value_parser = report_path)]
    pub reports: Vec<PathBuf>,
    /// Validate a running simulated pool instead of the embedded lab: its fabric's URL (`pcipool sim
    /// serve`); the controller is $PCIPOOL_URL with an operator token in $PCIPOOL_TOKEN.
    #[arg(long, value_name = "URL", conflicts_with = "lab_dir")]
    pub fabric_url: Option<String>,
    /// Validate a running VM lab (`pcipool lab up --dir DIR`): real kernels, real faults; the
    /// controller, its tokens and the guests are found through the lab's control socket.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["fabric", "policy"])]
    pub lab_dir: Option<PathBuf>,
    /// A tenant token that does not own the suites' leases (the isolation suite tries to release them
    /// with it); needed to run isolation against a running pool.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PCIPOOL_INTRUDER_TOKEN",
        hide_env_values = true
    )]
    pub intruder_token: Option<String>,
}

/// `pcipool server`.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Where the generated tokens live, and the store (pool.db) unless --store names etcd.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The store: `sqlite` (pool.db in --data-dir) or `etcd://HOST:PORT[,HOST:PORT...]` (an etcd
    /// cluster several controllers share: one leads, the others follow; see docs/etcd.md).
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
    /// The prefix of every key in an etcd store (one pool per prefix).
    #[arg(long, value_name = "PREFIX", default_value = "pcipool")]
    pub etcd_prefix: String,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// With an etcd store: the URL the other controllers pass requests to while this one leads
    /// (default: http:// and the address it listens on).
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// The fault tests' mutant: with an etcd store, writes do not compare the leadership (a
    /// deposed leader's late writes go through). Never for production.
    #[arg(long, hide = true)]
    pub mutant_no_leadership_compare: bool,
    /// Fabric description: the hosts, adapters and links (default: the built-in 4-host lab).
    #[arg(long, value_name = "FILE")]
    pub fabric: Option<PathBuf>,
    /// Token file (TOML [[token]] entries with name, role and token).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Pool policy (TOML: tenants, quotas, lease caps, maintenance windows, overrides).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Seconds without a heartbeat before a host's agent counts as lost.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub agent_timeout: u64,
    /// The fabric manager that carries out fabric steps (map, unmap): for the simulated fabric, the
    /// `pcipool sim serve` address.
    #[arg(long, value_name = "URL")]
    pub fabric_url: Option<String>,
    /// How the fabric connects a borrower to a device: `windows` (an NTB) or `whole-device` (a
    /// hypervisor or a switch that moves the device).
    #[arg(long, default_value = "windows")]
    pub fabric_attachment: pcipool_backend::Attachment,
}

/// `pcipool dev`.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the store and admin.token live (default: a fresh temp directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Fabric description (default: the built-in lab).
    #[arg(long, value_name = "FILE")]
    pub fabric: Option<PathBuf>,
    /// Serve the pool without the simulated data path (it runs a thread per NVMe drive: large
    /// fabrics such as fabrics/fabric-1024.toml need this).
    #[arg(long)]
    pub no_data_path: bool,
}

/// Where the API is: before or after the subcommand (`pcipool --url U borrow ...` or
/// `pcipool borrow --url U ...`), else the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Controller URL.
    #[arg(
        long,
        global = true,
        env = "PCIPOOL_URL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub url: String,
    /// Bearer token.
    #[arg(
        long,
        global = true,
        env = "PCIPOOL_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub token: String,
}

/// `pcipool host` subcommands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List the pool's hosts (from the controller's API).
    List,
    #[command(flatten)]
    Local(pcipool_backend_linux::host::HostOp),
}

/// Lease subcommands.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// List them.
    List {
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Renew a lease for another lease period (applications keep shared-model leases alive so; agents
    /// renew what their host's kernel holds).
    Renew {
        /// Lease id.
        lease: u64,
    },
    /// Let others share a device borrowed exclusively (`borrow --model shared --max-sharers 1`).
    Downgrade {
        /// Lease id.
        lease: u64,
        /// How many hosts may share it from now on (2-64).
        #[arg(long)]
        max_sharers: u32,
    },
}

/// Device subcommands.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show one device: what its agent reported, its state, leases and version.
    Show {
        /// Device (fabric device id, e.g. n1:0000:03:00.0).
        fdid: Fdid,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// List them.
    List {
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// Quarantine subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Clear a device's quarantine after fixing the cause.
    Clear {
        /// Device (fabric device id), or every quarantined device of a host (node id).
        target: DeviceOrHost,
    },
}

/// Workflow subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Show a workflow's journal (steps and their status).
    Show {
        /// Workflow id.
        id: u64,
        /// Wait up to this many seconds for the workflow to finish (at most 300).
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        wait: u64,
    },
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit records.
    List {
        /// First sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// Verify the hash chain; exit 1 when it is broken.
    Verify,
}

/// Simulator subcommands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve the simulated fabric over HTTP so agents in other processes drive it (the hardware outlives
    /// a controller or agent that is killed).
    Serve {
        /// Fabric description (TOML); default: the built-in 4-host lab.
        #[arg(long, value_name = "FILE")]
        fabric: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7080")]
        listen: String,
        /// The controller the data path checks leases with (without it, no mapping is granted).
        #[arg(long, value_name = "URL")]
        controller: Option<String>,
        /// Operator token (read when needed) with which the data path asks the controller for every
        /// lease, to tear down the mappings of leases that ended.
        #[arg(long, value_name = "FILE")]
        controller_token_file: Option<PathBuf>,
        /// Where device BARs, backing files and applications' segments live (default: a new directory
        /// under /dev/shm, removed at exit).
        #[arg(long, value_name = "DIR")]
        datapath_dir: Option<PathBuf>,
    },
    /// List the simulated hosts, adapters and devices.
    Inventory {
        /// Fabric description (TOML); default: the built-in 4-host lab (fabrics/lab-4.toml).
        #[arg(long, value_name = "FILE")]
        fabric: Option<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
    /// The whole system under a seeded random workload: the real controller, its service and store
    /// (in memory), the step runner and the simulated fabric, with a virtual clock: borrows of every
    /// model and gangs, releases, renewals, expiry, host and agent crashes, failing resets, link faults
    /// and controller restarts. The invariants are checked after every step; the same seed gives the
    /// same last line. Exit code 1 on a violation, with the command that replays it.
    Run {
        /// Fabric description (TOML); default: the built-in 4-host lab.
        #[arg(long, value_name = "FILE")]
        fabric: Option<PathBuf>,
        /// Seed.
        #[arg(long, env = "PCIPOOL_SIM_SEED", default_value_t = 1)]
        seed: u64,
        /// Steps.
        #[arg(long, default_value_t = 10_000)]
        steps: u64,
        /// Faults: all (hosts, agents, resets, links, controller restarts) or none.
        #[arg(long, value_enum, default_value_t = SystemFaults::All)]
        faults: SystemFaults,
        /// A bug planted on purpose, to see the invariants catch it: none, skip-unmap, drop-quarantine.
        #[arg(long, default_value = "none")]
        mutant: pcipool_sim_system::Mutant,
    },
    /// The fabric model alone (no controller) under a random workload of mappings and faults; checks its
    /// invariants after every step. Exit code 1 on a violation, with the command that replays it.
    FabricRun {
        /// Fabric description (TOML); default: the built-in 4-host lab.
        #[arg(long, value_name = "FILE")]
        fabric: Option<PathBuf>,
        /// Seed.
        #[arg(long, env = "PCIPOOL_SIM_SEED", default_value_t = 1)]
        seed: u64,
        /// Steps.
        #[arg(long, default_value_t = 10_000)]
        steps: u64,
        /// Faults to inject: all, none, or a comma list (crash, link, hang, reset-fail, surprise-remove,
        /// unbind-hang, slow, stray-dma).
        #[arg(long, default_value = "all")]
        faults: pcipool_sim::run::FaultSet,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

/// Which faults the whole-system simulation injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SystemFaults {
    /// Hosts, agents, resets, links and controller restarts.
    All,
    /// None: the workload alone.
    None,
}

/// A report file: its name says the format.
fn report_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match path.extension().and_then(|e| e.to_str()) {
        Some("json" | "html") => Ok(path),
        _ => Err(format!("{text}: the file must end in .json or .html")),
    }
}

impl HostArgs {
    /// The host's roots.
    pub fn paths(&self) -> pcipool_backend_linux::HostPaths {
        pcipool_backend_linux::HostPaths::given(&self.sysfs_root, self.proc_root.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_address_is_refused_by_the_parser() {
        let e = Cli::try_parse_from(["pcipool", "inspect", "zz:zz"]).expect_err("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }
}

/// `pcipool review`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// A fabric description reviewed as the simulator builds it (e.g. fabrics/rack-64.toml); without
    /// it, the running pool at --url is reviewed (with an operator's --token).
    #[arg(long)]
    pub fabric: Option<PathBuf>,
    /// Where review.html and review.json are written.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}
