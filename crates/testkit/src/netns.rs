//! Network namespaces as hosts: each host a namespace with one interface and an address of its own,
//! all joined by a bridge in a switch namespace, and the test process joined to the same bridge
//! through one veth pair, so it reaches every host by address. Cutting a host's link is setting its
//! port on the switch down. Everything is made with `ip` (root only) under a tag of this process's
//! id, on a private /24 of its own, and deleted when dropped. Nothing on the machine's own
//! interfaces or routes changes beyond the one connected route of that /24.

use std::process::{Command, Stdio};

/// One host: a namespace with an address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the test gives it (`c1`, `n1`, ...).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub addr: String,
    /// Its port on the switch.
    port: String,
}

/// Hosts joined by a switch.
#[derive(Debug)]
pub struct Net {
    switch: String,
    /// The hosts, in the order asked for.
    pub hosts: Vec<Host>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// Hosts named `names`, each in a namespace, joined by a switch; the test process gets the
    /// switch's last address.
    ///
    /// # Errors
    /// Not root, no `ip`, or a namespace cannot be made (the reason, for a SKIPPED line).
    pub fn new(names: &[&str]) -> Result<Self, String> {
        // Unique per process and per network in it (tests of one binary run side by side).
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("pp{}x{}", std::process::id() % 100_000, nth % 100);
        let subnet = format!("10.{}.{}", 77 + nth % 100, std::process::id() % 250);
        let switch = format!("{tag}-sw");
        ip(&["netns", "add", &switch])?;
        // From here on, whatever was made is deleted again when `net` drops (also on an error).
        let mut net = Self {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{tag}-{name}");
            let port = format!("p{i}");
            let inner = format!("{tag}i{i}");
            let addr = format!("{subnet}.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(Host {
                name: (*name).to_owned(),
                ns: ns.clone(),
                addr: addr.clone(),
                port: port.clone(),
            });
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", &inner,
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        let outer = format!("{tag}-t");
        ip(&[
            "-n", &switch, "link", "add", "test", "type", "veth", "peer", "name", &outer, "netns",
            "1",
        ])?;
        ip(&["-n", &switch, "link", "set", "test", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        Ok(net)
    }

    /// The host named `name`.
    ///
    /// # Panics
    /// No such host (a test's mistake).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in the test network"))
    }

    /// A command running `program` in host `name`'s namespace.
    pub fn command(&self, name: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.host(name).ns]).arg(program);
        c
    }

    /// Cuts host `name` off the switch.
    ///
    /// # Errors
    /// `ip` failed.
    pub fn cut(&self, name: &str) -> Result<(), String> {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.host(name).port,
            "down",
        ])
    }

    /// Joins host `name` to the switch again.
    ///
    /// # Errors
    /// `ip` failed.
    pub fn heal(&self, name: &str) -> Result<(), String> {
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.host(name).port,
            "up",
        ])
    }
}

impl Drop for Net {
    /// Deleting the namespaces deletes their interfaces, and with the switch's, the test's veth.
    fn drop(&mut self) {
        for h in &self.hosts {
            if let Err(e) = ip(&["netns", "del", &h.ns]) {
                eprintln!("netns: {e}");
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.switch]) {
            eprintln!("netns: {e}");
        }
    }
}
