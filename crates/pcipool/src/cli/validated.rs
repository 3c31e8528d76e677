//! The second phase of argument handling: raw arguments become a validated [`Command`] before any work
//! starts.

use super::*;

/// A validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Inventory of a host.
    Inventory {
        /// sysfs root.
        sys: PathBuf,
        /// procfs root.
        proc: PathBuf,
        /// Format.
        output: OutputFormat,
    },
    /// Inspect one device.
    Inspect {
        /// Address.
        bdf: Bdf,
        /// sysfs root.
        sys: PathBuf,
        /// procfs root.
        proc: PathBuf,
        /// Format.
        output: OutputFormat,
    },
    /// Decode a dump file.
    Decode {
        /// File (`-` = stdin).
        file: PathBuf,
        /// Format.
        output: OutputFormat,
    },
    /// Qualification report.
    Qualify(crate::qualify_cmd::QualifyOptions),
    /// `pcipool dev`.
    Dev {
        /// Data directory.
        data_dir: Option<PathBuf>,
        /// Listen address.
        listen: String,
        /// Fabric file.
        fabric: Option<PathBuf>,
    },
    /// `pcipool server`.
    Server(crate::server::ServerOptions),
    /// `pcipool agent`.
    Agent(crate::agent::AgentOptions),
    /// `pcipool sim serve`.
    SimServe(crate::sim_serve::SimServeOptions),
    /// `pcipool validate`.
    Validate(crate::validate_cmd::ValidateOptions),
    /// A client call.
    Client {
        /// URL.
        url: String,
        /// Token.
        token: String,
        /// What.
        call: ClientCall,
    },
    /// Simulator inventory.
    SimInventory {
        /// Description file, or None for the built-in lab.
        fabric: Option<PathBuf>,
        /// Format.
        output: OutputFormat,
    },
    /// Simulator run.
    SystemRun {
        /// Description file, or None for the built-in lab.
        fabric: Option<PathBuf>,
        /// Seed.
        seed: u64,
        /// Steps.
        steps: u64,
        /// Inject faults.
        faults: bool,
        /// Planted bug.
        mutant: pcipool_sim_system::Mutant,
    },
    /// The fabric model's workload.
    SimRun {
        /// Description file, or None for the built-in lab.
        fabric: Option<PathBuf>,
        /// Seed.
        seed: u64,
        /// Steps.
        steps: u64,
        /// Faults.
        faults: pcipool_sim::run::FaultSet,
        /// Format.
        output: OutputFormat,
    },
    /// API benchmark.
    BenchApi {
        /// Description file.
        fabric: Option<PathBuf>,
        /// Clients.
        clients: usize,
        /// Cycles.
        cycles: usize,
    },
    /// Restart benchmark.
    BenchRestart {
        /// Leases.
        leases: u64,
        /// Audit records.
        audit: u64,
    },
    /// Scheduler benchmark.
    BenchSchedule {
        /// Description file.
        fabric: Option<PathBuf>,
        /// Decisions.
        decisions: u64,
    },
    /// Data path benchmark.
    BenchDatapath {
        /// I/Os per mode and kind.
        ios: u64,
    },
    /// Simulator load benchmark.
    BenchSim {
        /// Description file.
        fabric: Option<PathBuf>,
    },
    /// Decode benchmark.
    BenchDecode {
        /// Dumps.
        dumps: usize,
        /// Rounds.
        rounds: usize,
        /// Where to keep the dump file.
        keep_file: Option<PathBuf>,
    },
}

/// A validated client call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCall {
    /// Borrow.
    Borrow(pcipool_wire::BorrowRequest, OutputFormat),
    /// Release.
    Release(u64),
    /// Renew a lease (at its current epoch).
    Renew(u64),
    /// Downgrade an exclusive shared lease to N sharers.
    Downgrade(u64, u32),
    /// List leases.
    Leases(OutputFormat),
    /// List devices.
    Devices(OutputFormat),
    /// Verify the audit chain.
    AuditVerify,
    /// List audit records.
    Audit(u64, usize, OutputFormat),
    /// List hosts.
    Hosts(OutputFormat),
    /// Operator action on a device.
    DeviceAction(String, pcipool_wire::DeviceAction),
    /// Show a workflow (waiting up to N seconds for its outcome).
    Workflow(u64, u64),
    /// Show one device.
    Device(pcipool_fabric::Fdid, OutputFormat),
}

/// Why arguments were rejected after clap accepted their shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn proc_root(host: &HostArgs) -> PathBuf {
    match &host.proc_root {
        Some(p) => p.clone(),
        None if host.sysfs_root == std::path::Path::new("/sys") => PathBuf::from("/proc"),
        None => host
            .sysfs_root
            .parent()
            .map_or_else(|| PathBuf::from("/proc"), |p| p.join("proc")),
    }
}

impl Cli {
    /// Second phase: raw arguments into a [`Command`].
    ///
    /// # Errors
    /// [`UsageError`] for values clap cannot check (addresses, ranges).
    pub fn validate(self) -> Result<Command, UsageError> {
        Ok(match self.command {
            CliCommand::Inventory { host, output } => Command::Inventory {
                proc: proc_root(&host),
                sys: host.sysfs_root,
                output,
            },
            CliCommand::Inspect { bdf, host, output } => Command::Inspect {
                bdf: bdf.parse().map_err(|e| UsageError(format!("{e}")))?,
                proc: proc_root(&host),
                sys: host.sysfs_root,
                output,
            },
            CliCommand::Decode { file, output } => Command::Decode { file, output },
            CliCommand::Qualify {
                bdfs,
                models,
                adapter_profile,
                borrower_modules,
                dma_window,
                policy,
                ntb_adapter,
                host,
                output,
                strict,
            } => {
                let usage = |e: String| UsageError(e);
                Command::Qualify(crate::qualify_cmd::QualifyOptions {
                    bdfs: bdfs
                        .iter()
                        .map(|b| b.parse().map_err(|e| usage(format!("{e}"))))
                        .collect::<Result<_, _>>()?,
                    models: models
                        .iter()
                        .map(|m| m.parse().map_err(|e| usage(format!("{e}"))))
                        .collect::<Result<_, _>>()?,
                    profile: adapter_profile,
                    borrower_modules,
                    dma_window: crate::qualify_cmd::parse_size(&dma_window).map_err(usage)?,
                    policy,
                    ntb_adapter: ntb_adapter
                        .map(|b| b.parse().map_err(|e| usage(format!("{e}"))))
                        .transpose()?,
                    paths: pcipool_backend_linux::HostPaths {
                        proc: proc_root(&host),
                        sys: host.sysfs_root,
                    },
                    output,
                    strict,
                })
            }
            CliCommand::Dev {
                data_dir,
                listen,
                fabric,
            } => Command::Dev {
                data_dir,
                listen,
                fabric,
            },
            CliCommand::Server {
                data_dir,
                listen,
                fabric,
                tokens,
                policy,
                agent_timeout,
                fabric_url,
            } => {
                if agent_timeout == 0 {
                    return Err(UsageError(
                        "--agent-timeout must be at least 1 second".into(),
                    ));
                }
                Command::Server(crate::server::ServerOptions {
                    data_dir,
                    listen,
                    fabric,
                    tokens,
                    policy,
                    agent_timeout: std::time::Duration::from_secs(agent_timeout),
                    fabric_url,
                })
            }
            CliCommand::Agent {
                node,
                fabric_url,
                listen,
                heartbeat_ms,
                api,
            } => {
                if heartbeat_ms == 0 {
                    return Err(UsageError("--heartbeat-ms must be at least 1".into()));
                }
                Command::Agent(crate::agent::AgentOptions {
                    node: node
                        .parse()
                        .map_err(|e| UsageError(format!("--node: {e}")))?,
                    fabric_url,
                    listen,
                    heartbeat: std::time::Duration::from_millis(heartbeat_ms),
                    controller: api.url,
                    token: api.token,
                })
            }
            CliCommand::Device {
                which: DeviceCommand::Show { api, fdid, output },
            } => {
                let fdid: pcipool_fabric::Fdid = fdid
                    .parse()
                    .map_err(|e| UsageError(format!("device {fdid:?}: {e}")))?;
                Command::Client {
                    url: api.url,
                    token: api.token,
                    call: ClientCall::Device(fdid, output),
                }
            }
            CliCommand::Sim {
                which:
                    SimCommand::Serve {
                        fabric,
                        listen,
                        controller,
                        controller_token_file,
                        datapath_dir,
                    },
            } => Command::SimServe(crate::sim_serve::SimServeOptions {
                fabric,
                listen,
                controller,
                controller_token_file,
                datapath_dir,
            }),
            CliCommand::Validate {
                suites,
                profile,
                cycles,
                devices,
                hosts,
                seed,
                fabric,
                policy,
                reports,
                fabric_url,
                intruder_token,
                api,
            } => {
                if let Some(bad) = reports.iter().find(|p| {
                    !matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "html")
                    )
                }) {
                    return Err(UsageError(format!(
                        "--report {}: the file must end in .json or .html",
                        bad.display()
                    )));
                }
                let mut chosen = Vec::new();
                for name in &suites {
                    let suite: pcipool_validate::Suite =
                        name.parse().map_err(|e| UsageError(format!("{e}")))?;
                    if !pcipool_validate::suites::BUILT.contains(&suite) {
                        return Err(UsageError(format!("suite {suite} is not built yet")));
                    }
                    chosen.push(suite);
                }
                let remote = fabric_url.is_some();
                if chosen.is_empty() {
                    // Against a running pool: what can be done from outside (no fault injection, no
                    // controller to kill; isolation only with a second tenant's token).
                    chosen = pcipool_validate::suites::BUILT
                        .into_iter()
                        .filter(|s| {
                            !remote
                                || (*s != pcipool_validate::Suite::Recovery
                                    && (*s != pcipool_validate::Suite::Isolation
                                        || intruder_token.is_some()))
                        })
                        .collect();
                }
                if remote && chosen.contains(&pcipool_validate::Suite::Recovery) {
                    return Err(UsageError(
                        "the recovery suite injects faults and kills the controller: run it against the embedded lab (no --fabric-url)".into(),
                    ));
                }
                if remote
                    && intruder_token.is_none()
                    && chosen.contains(&pcipool_validate::Suite::Isolation)
                {
                    return Err(UsageError(
                        "isolation against a running pool needs --intruder-token (a tenant token)"
                            .into(),
                    ));
                }
                let cycles = cycles.unwrap_or(if profile == "long" { 200 } else { 3 });
                if cycles == 0 {
                    return Err(UsageError("--cycles must be at least 1".into()));
                }
                Command::Validate(crate::validate_cmd::ValidateOptions {
                    suites: chosen,
                    profile,
                    cycles,
                    hosts: hosts
                        .iter()
                        .map(|h| {
                            h.parse()
                                .map_err(|e| UsageError(format!("--host {h:?}: {e}")))
                        })
                        .collect::<Result<_, _>>()?,
                    devices: devices
                        .iter()
                        .map(|d| {
                            d.parse()
                                .map_err(|e| UsageError(format!("--device {d:?}: {e}")))
                        })
                        .collect::<Result<_, _>>()?,
                    seed,
                    fabric,
                    policy,
                    reports,
                    remote: fabric_url.map(|fabric_url| crate::validate_cmd::Remote {
                        url: api.url,
                        token: api.token,
                        fabric_url,
                        intruder_token,
                    }),
                })
            }
            CliCommand::Borrow {
                api,
                class,
                device,
                host,
                count,
                model,
                duration,
                max_sharers,
                request_id,
                no_wait,
                output,
            } => {
                let usage = |e: String| UsageError(e);
                let selector = pcipool_pool::schedule::Selector {
                    class: class.map(|c| c.parse()).transpose().map_err(usage)?,
                    fdid: device
                        .map(|d| {
                            d.parse::<pcipool_fabric::Fdid>()
                                .map_err(|e| usage(e.to_string()))
                        })
                        .transpose()?,
                    ..pcipool_pool::schedule::Selector::default()
                };
                if selector.class.is_none() && selector.fdid.is_none() {
                    return Err(UsageError("give --class or --device".into()));
                }
                let request =
                    pcipool_wire::BorrowRequest {
                        selector,
                        count,
                        model: model.parse().map_err(
                            |e: pcipool_qualify::finding::UnknownModel| usage(e.to_string()),
                        )?,
                        borrower: host
                            .parse()
                            .map_err(|e: pcipool_fabric::IdError| usage(e.to_string()))?,
                        duration_secs: duration,
                        max_sharers,
                        request_id,
                        wait: !no_wait,
                    };
                Command::Client {
                    url: api.url,
                    token: api.token,
                    call: ClientCall::Borrow(request, output),
                }
            }
            CliCommand::Release { api, lease } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Release(lease),
            },
            CliCommand::Lease {
                which: LeaseCommand::List { api, output },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Leases(output),
            },
            CliCommand::Lease {
                which: LeaseCommand::Renew { api, lease },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Renew(lease),
            },
            CliCommand::Lease {
                which:
                    LeaseCommand::Downgrade {
                        api,
                        lease,
                        max_sharers,
                    },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Downgrade(lease, max_sharers),
            },
            CliCommand::Device {
                which: DeviceCommand::List { api, output },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Devices(output),
            },
            CliCommand::Host {
                which: ListCommand::List { api, output },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Hosts(output),
            },
            CliCommand::Drain { api, fdid, local } => {
                let action = if local {
                    pcipool_wire::DeviceAction::DrainLocal
                } else {
                    pcipool_wire::DeviceAction::Drain
                };
                Command::Client {
                    url: api.url,
                    token: api.token,
                    call: ClientCall::DeviceAction(fdid, action),
                }
            }
            CliCommand::Undrain { api, fdid } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::DeviceAction(fdid, pcipool_wire::DeviceAction::Undrain),
            },
            CliCommand::Quarantine {
                which: QuarantineCommand::Clear { api, fdid },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::DeviceAction(fdid, pcipool_wire::DeviceAction::ClearQuarantine),
            },
            CliCommand::Workflow {
                which: WorkflowCommand::Show { api, id, wait },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Workflow(id, wait),
            },
            CliCommand::Audit {
                which:
                    AuditCommand::List {
                        api,
                        from,
                        limit,
                        output,
                    },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::Audit(from, limit, output),
            },
            CliCommand::Audit {
                which: AuditCommand::Verify { api },
            } => Command::Client {
                url: api.url,
                token: api.token,
                call: ClientCall::AuditVerify,
            },
            CliCommand::Sim {
                which: SimCommand::Inventory { fabric, output },
            } => Command::SimInventory { fabric, output },
            CliCommand::Sim {
                which:
                    SimCommand::Run {
                        fabric,
                        seed,
                        steps,
                        faults,
                        mutant,
                    },
            } => Command::SystemRun {
                fabric,
                seed: sim_seed(seed)?,
                steps,
                faults: faults == SystemFaults::All,
                mutant,
            },
            CliCommand::Sim {
                which:
                    SimCommand::FabricRun {
                        fabric,
                        seed,
                        steps,
                        faults,
                        output,
                    },
            } => Command::SimRun {
                fabric,
                seed: sim_seed(seed)?,
                steps,
                faults: faults.parse().map_err(|e| UsageError(format!("{e}")))?,
                output,
            },
            CliCommand::Bench {
                which: BenchCommand::Sim { fabric },
            } => Command::BenchSim { fabric },
            CliCommand::Bench {
                which: BenchCommand::Schedule { fabric, decisions },
            } => Command::BenchSchedule { fabric, decisions },
            CliCommand::Bench {
                which: BenchCommand::Restart { leases, audit },
            } => Command::BenchRestart { leases, audit },
            CliCommand::Bench {
                which: BenchCommand::Datapath { ios },
            } => {
                if ios < 5 {
                    return Err(UsageError("--ios must be at least 5".into()));
                }
                Command::BenchDatapath { ios }
            }
            CliCommand::Bench {
                which:
                    BenchCommand::Api {
                        fabric,
                        clients,
                        cycles,
                    },
            } => Command::BenchApi {
                fabric,
                clients,
                cycles,
            },
            CliCommand::Bench {
                which:
                    BenchCommand::Decode {
                        dumps,
                        rounds,
                        keep_file,
                    },
            } => {
                if !(1..=100_000).contains(&dumps) || !(1..=1000).contains(&rounds) {
                    return Err(UsageError(
                        "--dumps must be 1..=100000 and --rounds 1..=1000".to_owned(),
                    ));
                }
                Command::BenchDecode {
                    dumps,
                    rounds,
                    keep_file,
                }
            }
        })
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
    fn inspect_bad_address_is_usage_error() {
        let cli = Cli::parse_from(["pcipool", "inspect", "zz:zz"]);
        assert!(matches!(cli.validate(), Err(UsageError(_))));
    }

    #[test]
    fn proc_root_defaults_beside_fake_sysfs() {
        let cli = Cli::parse_from(["pcipool", "inventory", "--sysfs-root", "/tmp/x/sys"]);
        let Ok(Command::Inventory { proc, .. }) = cli.validate() else {
            panic!("inventory command expected");
        };
        assert_eq!(proc, PathBuf::from("/tmp/x/proc"));
    }
}
