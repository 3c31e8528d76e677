//! The guest's initramfs: busybox, kernel modules with their dependencies, pcipool with its shared
//! libraries, and an `/init` that serves commands on the console.
//!
//! The console protocol: the machine writes `ID COMMAND` lines; `/init` answers `@@begin ID`, the
//! command's output (stdout and stderr), and `@@end ID STATUS`. Echo is off, so the console carries
//! only answers (and whatever the kernel prints, which [`crate::vm::Vm::run`] drops).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::kernel::Kernel;
use crate::{VmError, run};

/// The `/init` script; `@MODULES@` is replaced with the modules to load.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /mnt /run /var
mount -t tmpfs tmpfs /tmp
for m in @MODULES@; do modprobe "$m" || echo "@@modprobe $m failed"; done
stty -echo 2>/dev/null
echo "@@ready"
while read -r id cmd; do
  echo "@@begin $id"
  sh -c "$cmd" </dev/null 2>&1
  echo "@@end $id $?"
done
echo "@@console closed"
poweroff -f
"#;

/// What goes into an initramfs.
#[derive(Debug, Clone)]
pub struct Contents<'a> {
    /// The kernel whose modules are packed.
    pub kernel: &'a Kernel,
    /// Modules to load at boot (names as `modprobe` takes them); their dependencies come along.
    pub modules: &'a [&'a str],
    /// Programs to put in `/bin` with their shared libraries (the pcipool binary).
    pub programs: &'a [&'a Path],
    /// Data files: where each is on the machine, and its absolute path in the guest (`pci.ids`, so that
    /// the guest's `pcipool` names devices as the machine's does).
    pub files: &'a [(&'a Path, &'a str)],
}

fn copy(from: &Path, to: &Path) -> Result<(), VmError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(VmError::io(format!("creating {}", dir.display())))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(VmError::io(format!("copying {}", from.display())))
}

/// The module files `name` needs (itself last), from modules.dep.
fn module_closure(kernel: &Kernel, names: &[&str]) -> Result<BTreeSet<String>, VmError> {
    let dep = std::fs::read_to_string(kernel.modules.join("modules.dep"))
        .map_err(VmError::io("reading modules.dep"))?;
    let mut out = BTreeSet::new();
    for name in names {
        let file_name = format!("{}.ko", name.replace('_', "-"));
        let alt_name = format!("{}.ko", name.replace('-', "_"));
        let line = dep
            .lines()
            .find(|l| {
                l.split(':').next().is_some_and(|m| {
                    m.ends_with(&format!("/{file_name}")) || m.ends_with(&format!("/{alt_name}"))
                })
            })
            .ok_or_else(|| VmError::Guest(format!("no module {name} in {}", kernel.version)))?;
        let (module, deps) = line.split_once(':').unwrap_or((line, ""));
        out.insert(module.to_owned());
        out.extend(deps.split_whitespace().map(str::to_owned));
    }
    Ok(out)
}

/// The shared libraries and loader `ldd` names for `program`.
fn libraries(program: &Path) -> Result<Vec<PathBuf>, VmError> {
    let text = run(Command::new("ldd").arg(program))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Builds the initramfs (an uncompressed newc cpio: nothing to unpack slowly under emulation) at
/// `out`, staging in `work`.
///
/// # Errors
/// Copies, `ldd`, `strip`, `cpio`.
pub fn build(contents: &Contents<'_>, work: &Path, out: &Path) -> Result<(), VmError> {
    let root = work.join("initramfs");
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(VmError::io("clearing the staging tree"))?;
    }
    for dir in ["bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "etc"] {
        std::fs::create_dir_all(root.join(dir)).map_err(VmError::io("staging tree"))?;
    }
    copy(&crate::tools::path_of("busybox"), &root.join("bin/busybox"))?;
    let init = INIT.replace("@MODULES@", &contents.modules.join(" "));
    std::fs::write(root.join("init"), init).map_err(VmError::io("writing /init"))?;
    run(Command::new("chmod").args(["755"]).arg(root.join("init")))?;
    let modules_to = root.join(format!("lib/modules/{}", contents.kernel.version));
    for module in module_closure(contents.kernel, contents.modules)? {
        copy(
            &contents.kernel.modules.join(&module),
            &modules_to.join(&module),
        )?;
    }
    for meta in [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias",
        "modules.alias.bin",
        "modules.softdep",
        "modules.builtin",
        "modules.builtin.bin",
        "modules.order",
    ] {
        let from = contents.kernel.modules.join(meta);
        if from.exists() {
            copy(&from, &modules_to.join(meta))?;
        }
    }
    for program in contents.programs {
        let name = program
            .file_name()
            .ok_or_else(|| VmError::Guest(format!("{} has no file name", program.display())))?;
        let to = root.join("bin").join(name);
        copy(program, &to)?;
        // A debug build carries its debug info: 170 MB to load under emulation instead of 30.
        let _not_stripped = Command::new("strip")
            .arg(&to)
            .stderr(Stdio::null())
            .status();
        for lib in libraries(program)? {
            copy(&lib, &root.join(lib.strip_prefix("/").unwrap_or(&lib)))?;
        }
    }
    for (from, to) in contents.files {
        copy(from, &root.join(to.trim_start_matches('/')))?;
    }
    let list = run(Command::new("find").arg(".").current_dir(&root))?;
    let file =
        std::fs::File::create(out).map_err(VmError::io(format!("creating {}", out.display())))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .map_err(VmError::io("starting cpio"))?;
    if let Some(mut stdin) = cpio.stdin.take() {
        std::io::Write::write_all(&mut stdin, list.as_bytes())
            .map_err(VmError::io("feeding cpio"))?;
    }
    let status = cpio.wait().map_err(VmError::io("waiting for cpio"))?;
    if status.success() {
        Ok(())
    } else {
        Err(VmError::Command {
            what: "cpio -o -H newc".into(),
            detail: status.to_string(),
        })
    }
}
