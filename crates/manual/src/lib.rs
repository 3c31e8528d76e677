//! The command line's manual, generated from its clap definition so it never drifts from the
//! parser: shell completions (`pcipool completions SHELL`) and roff man pages, one for the program
//! and one per subcommand (`pcipool man --dir DIR`).
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// `command`'s completion script for `shell`. Made in memory: the generator cannot report a failed
/// write (it panics), so the caller writes the script and handles a closed pipe itself.
pub fn completions(command: &mut clap::Command, shell: Shell) -> Vec<u8> {
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, command, name, &mut script);
    script
}

/// Writes a man page for `command` and each subcommand, nested ones included (`pcipool-lease-list.1`),
/// into `dir`; returns the files written.
///
/// # Errors
/// The directory or a page cannot be written.
pub fn man_pages(command: &clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut command = command.clone();
    command.build();
    write_pages(&command, command.get_name(), dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = command.clone().name(name.to_owned());
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, roff)?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("tool")
            .about("Does things")
            .subcommand(
                clap::Command::new("lease")
                    .about("Leases")
                    .subcommand(clap::Command::new("list").about("Lists leases")),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn a_page_per_visible_command_nested_ones_included() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = man_pages(&command(), dir.path()).expect("written");
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["tool.1", "tool-lease.1", "tool-lease-list.1"]);
        let page = std::fs::read_to_string(dir.path().join("tool-lease-list.1")).expect("page");
        assert!(
            page.contains(".TH tool-lease-list") && page.contains("Lists leases"),
            "{page}"
        );
    }

    #[test]
    fn completions_name_the_subcommands() {
        let script = String::from_utf8(completions(&mut command(), Shell::Bash)).expect("utf-8");
        assert!(
            script.contains("lease") && script.contains("complete -F"),
            "{script}"
        );
    }
}
