//! The data-path suite: what an application sees of shared access, through `pcipool-access` against
//! the pool's controller and fabric, per device the fabric serves. Two hosts that may borrow the device
//! play a manager and a sharer (the libnvm arrangement over SmartIO):
//!
//! - the manager borrows exclusively, maps BAR 0 (positive control: the registers read sane), maps its
//!   own memory for DMA, enables the controller and creates its queue pair; a second borrower is refused
//!   meanwhile;
//! - what the manager writes reads back intact; the manager downgrades, the sharer joins with its own
//!   window, memory and queue pair (created by the manager), and what the sharer writes, the manager
//!   reads back intact from another host;
//! - the sharer cannot point the device at the manager's memory (not exported);
//! - after the sharer returns, its kept handles read all ones; after the manager returns, the device is
//!   available again with no lease.

use std::time::{Duration, Instant};

use pcipool_access::{AccessError, Config, Mode, Pool};
use pcipool_fabric::{Fdid, NodeId};
use pcipool_sim_datapath::driver::{BlockIo, Driver, SharedClient, layout};

use crate::report::{Check, Suite};
use crate::suites::{Options, Progress, Recorder, micros};
use crate::target::Target;

/// How the suite reaches a pool's data path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPathAccess {
    /// The controller's URL.
    pub controller: String,
    /// The fabric's URL (its data path).
    pub fabric: String,
    /// An operator or tenant token.
    pub token: String,
}

/// The bytes written to block extent `i` by `who`.
fn pattern(who: &str, i: u64) -> Vec<u8> {
    format!("pcipool validate {who} extent {i} ")
        .bytes()
        .cycle()
        .take(4096)
        .collect()
}

fn text(e: &AccessError) -> String {
    e.to_string()
}

/// Writes `extents` 4 KiB extents from `lba` and reads each back; the evidence of the first mismatch.
fn round_trip(d: &mut impl BlockIo, who: &str, lba: u64, extents: u64) -> Result<(), String> {
    for i in 0..extents {
        d.seg()
            .write(layout::DATA, &pattern(who, i))
            .map_err(|e| e.to_string())?;
        d.write(lba + i * 8, 8, 0)
            .map_err(|e| format!("write: {e}"))?;
    }
    read_back(d, who, lba, extents)
}

fn read_back(d: &mut impl BlockIo, who: &str, lba: u64, extents: u64) -> Result<(), String> {
    for i in 0..extents {
        d.read(lba + i * 8, 8, 4096)
            .map_err(|e| format!("read: {e}"))?;
        let mut back = vec![0u8; 4096];
        d.seg()
            .read(layout::DATA + 4096, &mut back)
            .map_err(|e| e.to_string())?;
        if back != pattern(who, i) {
            return Err(format!("extent {i} at LBA {} differs", lba + i * 8));
        }
    }
    Ok(())
}

/// `datapath`: see the module documentation.
pub fn datapath(
    t: &dyn Target,
    o: &Options,
    progress: &mut dyn FnMut(&Progress),
    failed: usize,
) -> Vec<Check> {
    let mut r = Recorder::new(Suite::DataPath, progress, 1, failed);
    let Some(access) = &o.data_path else {
        r.check(
            "a data path to validate",
            "pool",
            false,
            vec![
                "this target offers no data path (pcipool validate starts one for the embedded lab; against a running pool pass --fabric-url)".into(),
            ],
            0,
        );
        return r.checks;
    };
    let connect = |host: NodeId| {
        Pool::connect(&Config {
            controller: access.controller.clone(),
            fabric: access.fabric.clone(),
            token: access.token.clone(),
            host: host.to_string(),
            lease_secs: None,
        })
    };
    // Which devices the fabric serves: asked as any host would.
    let served: Vec<Fdid> = match t
        .devices()
        .into_iter()
        .flat_map(|d| t.borrowers(d.fdid))
        .next()
        .map(connect)
    {
        Some(Ok(pool)) => match pool.find(&pcipool_access::Filter {
            on_data_path: true,
            ..pcipool_access::Filter::default()
        }) {
            Ok(found) => found
                .into_iter()
                .map(|d| d.fdid)
                .filter(|f| o.devices.is_empty() || o.devices.contains(f))
                .collect(),
            Err(e) => {
                r.check(
                    "the pool lists its devices",
                    "pool",
                    false,
                    vec![text(&e)],
                    0,
                );
                return r.checks;
            }
        },
        Some(Err(e)) => {
            r.check(
                "the fabric's data path answers",
                "pool",
                false,
                vec![text(&e)],
                0,
            );
            return r.checks;
        }
        None => {
            r.check(
                "a host to borrow from",
                "pool",
                false,
                vec!["no device has a borrower".into()],
                0,
            );
            return r.checks;
        }
    };
    if served.is_empty() {
        r.check(
            "a device on the data path",
            "pool",
            false,
            vec!["the fabric serves no device the selection includes".into()],
            0,
        );
        return r.checks;
    }
    r.total = served.len() as u64;
    for fdid in served {
        device(&mut r, t, &connect, fdid);
        r.step();
    }
    r.checks
}

/// Every check of one device.
fn device(
    r: &mut Recorder<'_>,
    t: &dyn Target,
    connect: &dyn Fn(NodeId) -> Result<Pool, AccessError>,
    fdid: Fdid,
) {
    let name = fdid.to_string();
    let hosts = t.borrowers(fdid);
    let (Some(&a), Some(&b)) = (hosts.first(), hosts.get(1)) else {
        r.check(
            "two hosts that may borrow it",
            &name,
            false,
            vec![format!("borrowers: {hosts:?}")],
            0,
        );
        return;
    };
    let (manager_pool, sharer_pool) = match (connect(a), connect(b)) {
        (Ok(m), Ok(s)) => (m, s),
        (Err(e), _) | (_, Err(e)) => {
            r.check("connect", &name, false, vec![text(&e)], 0);
            return;
        }
    };
    // The manager: exclusive borrow, BAR, memory, enable, its own queue pair.
    let started = Instant::now();
    let manager = (|| -> Result<_, String> {
        let borrow = manager_pool
            .borrow(&name, Mode::Exclusive)
            .map_err(|e| format!("exclusive borrow: {}", text(&e)))?;
        let bar = borrow
            .map_bar()
            .map_err(|e| format!("map BAR: {}", text(&e)))?;
        let cap = bar.read32(0).map_err(|e| e.to_string())?;
        if cap == u32::MAX || cap & 0xffff == 0 {
            return Err(format!("CAP reads {cap:#x} through the window"));
        }
        let seg = manager_pool
            .segment("validate-manager", layout::SEGMENT)
            .map_err(|e| format!("segment: {}", text(&e)))?;
        let dma = borrow
            .map_for_dma(&seg)
            .map_err(|e| format!("map for DMA: {}", text(&e)))?;
        let mem = seg.reopen().map_err(|e| text(&e))?;
        let mut d = Driver::new(bar, mem, dma.device_addr(), 1);
        d.enable().map_err(|e| format!("enable: {e}"))?;
        d.create_io_queues(1, dma.device_addr())
            .map_err(|e| format!("queues: {e}"))?;
        Ok((borrow, seg, dma, d))
    })();
    let Some((borrow, _seg, _dma, mut d)) = r
        .check(
            "exclusive borrow, BAR, DMA memory, enable",
            &name,
            manager.is_ok(),
            manager.as_ref().err().cloned().into_iter().collect(),
            micros(started),
        )
        .then_some(manager.ok())
        .flatten()
    else {
        return;
    };
    let refused = sharer_pool.borrow(&name, Mode::Shared { max_sharers: 4 });
    r.check(
        "an exclusive borrow keeps others out",
        &name,
        matches!(&refused, Err(e) if e.code() == Some("CONFLICT")),
        vec![format!(
            "second borrow: {:?}",
            refused
                .as_ref()
                .map(pcipool_access::Borrow::lease)
                .map_err(text)
        )],
        0,
    );
    drop(refused);
    let started = Instant::now();
    let own = round_trip(&mut d, &a.to_string(), 0, 4);
    r.check(
        "the holder's writes read back intact",
        &name,
        own.is_ok(),
        own.err().into_iter().collect(),
        micros(started),
    );

    // The sharer joins after the downgrade, with its own window, memory and queue pair.
    let started = Instant::now();
    let sharer = (|| -> Result<_, String> {
        borrow
            .downgrade(4)
            .map_err(|e| format!("downgrade: {}", text(&e)))?;
        let joined = sharer_pool
            .borrow(&name, Mode::Shared { max_sharers: 4 })
            .map_err(|e| format!("shared borrow: {}", text(&e)))?;
        let seg = sharer_pool
            .segment("validate-sharer", layout::SEGMENT)
            .map_err(|e| format!("segment: {}", text(&e)))?;
        let dma = joined
            .map_for_dma(&seg)
            .map_err(|e| format!("map for DMA: {}", text(&e)))?;
        d.create_io_queues(2, dma.device_addr())
            .map_err(|e| format!("the manager creates the sharer's queues: {e}"))?;
        let bar = joined
            .map_bar()
            .map_err(|e| format!("map BAR: {}", text(&e)))?;
        let mem = seg.reopen().map_err(|e| text(&e))?;
        let sd = SharedClient::new(bar, mem, dma.device_addr(), 2);
        Ok((joined, seg, dma, sd))
    })();
    let Some((joined, _sseg, _sdma, mut sd)) = r
        .check(
            "downgrade, then a sharer joins with its own queue pair",
            &name,
            sharer.is_ok(),
            sharer.as_ref().err().cloned().into_iter().collect(),
            micros(started),
        )
        .then_some(sharer.ok())
        .flatten()
    else {
        let _ = borrow.give_back();
        return;
    };
    let started = Instant::now();
    let across = round_trip(&mut sd, &b.to_string(), 1024, 4)
        .and_then(|()| read_back(&mut d, &b.to_string(), 1024, 4));
    r.check(
        "what one host writes another reads back intact",
        &name,
        across.is_ok(),
        across.err().into_iter().collect(),
        micros(started),
    );
    let peer = joined.map_peer_for_dma(&a.to_string(), "validate-manager");
    r.check(
        "a sharer cannot reach memory not exported to it",
        &name,
        matches!(&peer, Err(e) if e.code() == Some("FORBIDDEN")),
        vec![format!(
            "mapping the manager's memory: {:?}",
            peer.as_ref()
                .map(pcipool_access::DmaMapping::device_addr)
                .map_err(text)
        )],
        0,
    );
    drop(peer);

    // Returns: the sharer's kept handles reach nothing; the device goes back to the pool.
    let gave = joined.give_back();
    let stale = sd.reg(pcipool_sim_nvme::regs::CAP).unwrap_or(0);
    r.check(
        "a returned borrow's handles read all ones",
        &name,
        gave.is_ok() && stale == u32::MAX,
        vec![format!(
            "give back: {:?}; CAP through the kept window: {stale:#x}",
            gave.as_ref().map_err(text)
        )],
        0,
    );
    drop((sd, joined));
    drop(d);
    let gave = borrow.give_back();
    drop(borrow);
    let until = Instant::now() + Duration::from_secs(10);
    let state = loop {
        let now = manager_pool
            .find(&pcipool_access::Filter::default())
            .map(|all| {
                all.into_iter()
                    .find(|v| v.fdid == fdid)
                    .map(|v| (v.state, v.leases.len()))
            });
        match now {
            Ok(Some((s, 0))) if s == "available" => break Ok(s),
            other if Instant::now() > until => break Err(format!("{other:?}")),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    r.check(
        "after the last return the device is available with no lease",
        &name,
        gave.is_ok() && state.is_ok(),
        vec![format!(
            "give back: {:?}; device: {state:?}",
            gave.as_ref().map_err(text)
        )],
        0,
    );
}
