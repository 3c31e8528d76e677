//! The dispatch of every command, and the commands that read this host (inventory, inspect, decode).
//! Each prints to stdout and returns the exit code.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use pcipool_agent::process::AgentProcess;
use pcipool_backend::Inventory;
use pcipool_backend_linux::{HostPaths, LinuxHost};
use pcipool_describe::PciIds;
use pcipool_pcie::Bdf;
use pcipool_pcie::dump::parse_dump;
use pcipool_serve::server::ServerConfig;
use pcipool_sim_server::process::FabricProcess;
use pcipool_validate::session::{Remote, Session};
use serde::Serialize;

use crate::cli::{Cli, CliCommand, OutputFormat, SimCommand, SystemFaults};
use crate::{BadInput, NotFound, serve_cmd, sim_cmd};

/// Runs one command.
///
/// # Errors
/// Whatever the command fails with; the caller maps it to an exit code.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = cli.api;
    match cli.command {
        CliCommand::Inventory { host, output } => inventory(&host.paths(), None, output),
        CliCommand::Inspect { bdf, host, output } => inventory(&host.paths(), Some(bdf), output),
        CliCommand::Decode { file, output } => decode(&file, output),
        CliCommand::Qualify(args) => crate::qualify_cmd::run(&args),
        CliCommand::Host(args) => host(&api, args),
        CliCommand::Relay { addr } => {
            pcipool_client::relay::run(&addr).with_context(|| format!("relaying to {addr}"))?;
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Lab(command) => {
            let exe = std::env::current_exe().context("finding this program")?;
            let code = pcipool_lab::command::run(command, &exe, &mut std::io::stdout().lock())
                .map_err(|e| match e {
                    pcipool_lab::LabError::Description(_) => BadInput(e.to_string()).into(),
                    pcipool_lab::LabError::NoSuchHost(_) => NotFound(e.to_string()).into(),
                    other => anyhow::Error::new(other),
                })?;
            Ok(ExitCode::from(code))
        }
        CliCommand::Dev(args) => serve_cmd::dev(
            args.data_dir,
            &args.listen,
            args.fabric.as_deref(),
            !args.no_data_path,
        ),
        CliCommand::Server(a) => serve_cmd::server(
            &ServerConfig {
                data_dir: a.data_dir,
                store: pcipool_serve::server::StoreAt::parse(a.store.as_deref(), &a.etcd_prefix)
                    .map_err(|e| crate::BadInput(e.to_string()))?,
                fabric: a.fabric,
                tokens: a.tokens,
                policy: a.policy,
                agent_timeout: Duration::from_secs(a.agent_timeout),
                fabric_url: a.fabric_url,
                attachment: a.fabric_attachment,
                advertise_url: a.advertise_url,
                mutant_unfenced: a.mutant_no_leadership_compare,
            },
            &a.listen,
        ),
        CliCommand::Agent(options) => serve_cmd::agent(AgentProcess {
            options,
            controller: api.url,
            token: api.token,
            secret: String::new(),
        }),
        CliCommand::Review(a) => {
            let review = pcipool_review::make(
                a.fabric.as_deref(),
                &pcipool_client::Client::new(&api.url, &api.token),
            )
            .map_err(|e| match e {
                pcipool_review::ReviewError::Load(e) => crate::BadInput(e.to_string()).into(),
                other => anyhow::Error::new(other),
            })?;
            let (html, json) = pcipool_review::write(&review, &a.dir)?;
            emit(&format!(
                "{}\nwrote {} and {}\n",
                review.text_summary(),
                html.display(),
                json.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Validate(a) => {
            let session = Session {
                cycles: a.cycles.unwrap_or_else(|| a.profile.cycles()),
                suites: a.suites,
                profile: a.profile.name().to_owned(),
                devices: a.devices,
                hosts: a.hosts,
                seed: a.seed,
                fabric: a.fabric,
                policy: serve_cmd::policy(a.policy.as_deref())?,
                remote: a.fabric_url.map(|fabric_url| Remote {
                    url: api.url,
                    token: api.token,
                    fabric_url,
                    intruder_token: a.intruder_token,
                }),
                lab: a.lab_dir,
                scratch: std::env::temp_dir()
                    .join(format!("pcipool-validate-{}", std::process::id())),
            };
            crate::validate_cmd::run(&session, &a.reports)
        }
        CliCommand::Sim(which) => match which {
            SimCommand::Serve {
                fabric,
                listen,
                controller,
                controller_token_file,
                datapath_dir,
            } => serve_cmd::sim_serve(FabricProcess {
                desc: sim_cmd::load(fabric.as_deref())?.desc,
                listen,
                controller,
                controller_token_file,
                datapath_dir,
            }),
            SimCommand::Inventory { fabric, output } => {
                sim_cmd::inventory(fabric.as_deref(), output)
            }
            SimCommand::Run {
                fabric,
                seed,
                steps,
                faults,
                mutant,
            } => sim_cmd::system_run(
                fabric.as_deref(),
                seed,
                steps,
                faults == SystemFaults::All,
                mutant,
            ),
            SimCommand::FabricRun {
                fabric,
                seed,
                steps,
                faults,
                output,
            } => sim_cmd::fabric_run(fabric.as_deref(), seed, steps, &faults, output),
        },
        CliCommand::Completions { shell } => {
            let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
            let script = pcipool_manual::completions(&mut command, shell);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
                .context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Man { dir } => {
            let command = <crate::cli::Cli as clap::CommandFactory>::command();
            let pages = pcipool_manual::man_pages(&command, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("{} man pages written to {}", pages.len(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Bench(benchmark) => {
            let exe = std::env::current_exe().context("locating the pcipool binary")?;
            let report = pcipool_bench::run(&benchmark, &exe).map_err(|e| match e {
                pcipool_bench::BenchError::Fabric(e @ pcipool_sim::LoadError::Invalid { .. }) => {
                    BadInput(e.to_string()).into()
                }
                other => anyhow::Error::new(other),
            })?;
            emit(&report)?;
            Ok(ExitCode::SUCCESS)
        }
        CliCommand::Client(command) => crate::client_cmd::run(&api, command),
    }
}

/// Prints `text` to stdout.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// Prints an answer as JSON or as its text.
pub fn show<T: Serialize + ?Sized>(
    output: OutputFormat,
    answer: &T,
    as_text: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    match output {
        OutputFormat::Json => emit_json(&answer)?,
        OutputFormat::Table => emit(&as_text(answer))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as pretty JSON.
pub fn emit_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("serialising JSON")?;
    text.push('\n');
    emit(&text)
}

/// `pcipool inventory` (every function) and `pcipool inspect` (`only` one).
fn inventory(
    paths: &HostPaths,
    only: Option<Bdf>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let sys = paths.sys.display();
    let inv = LinuxHost::new(paths.clone())
        .inventory()
        .with_context(|| format!("reading PCI inventory under {sys}"))?;
    let ids = PciIds::system();
    let Some(bdf) = only else {
        return show(output, &inv, |i| {
            pcipool_describe::text::inventory_table(ids, i)
        });
    };
    let device = inv.devices.iter().find(|d| d.bdf == bdf);
    let device = device.ok_or_else(|| NotFound(format!("no PCI function {bdf} under {sys}")))?;
    show(output, device, |d| {
        let mut text = String::new();
        pcipool_describe::text::record(&mut text, ids, d);
        text
    })
}

fn decode(file: &Path, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let name = file.display().to_string();
    let text =
        pcipool_describe::dump::read_source(file).with_context(|| format!("reading {name}"))?;
    let devices =
        parse_dump(&text).map_err(|e| BadInput(format!("{name}:{}: {}", e.line, e.kind)))?;
    let decoded = pcipool_describe::dump::decode_all(&devices);
    let failures = pcipool_describe::dump::failures(&decoded);
    match output {
        OutputFormat::Json => emit_json(&pcipool_describe::dump::rows(&decoded))?,
        OutputFormat::Table => emit(&pcipool_describe::dump::text(
            PciIds::system(),
            &name,
            &decoded,
        ))?,
    }
    if failures > 0 {
        return Err(BadInput(format!(
            "{name}: {failures} of {} devices could not be decoded",
            devices.len()
        ))
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

fn host(api: &crate::cli::ApiArgs, a: crate::cli::HostCommandArgs) -> anyhow::Result<ExitCode> {
    let crate::cli::HostCommand::Local(op) = a.command else {
        return crate::client_cmd::hosts(api, a.output);
    };
    let mode = pcipool_backend_linux::write::Mode::dry_run(a.dry_run);
    let deadline = std::time::Duration::from_secs(a.write_deadline);
    match pcipool_backend_linux::host::run(&a.host.paths(), &op, mode, deadline) {
        Ok(report) => show(
            a.output,
            &report,
            pcipool_backend_linux::host::HostReport::text,
        ),
        Err(e) => {
            eprintln!("pcipool: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
