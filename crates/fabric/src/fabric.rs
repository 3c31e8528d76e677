//! The fabric's live state: mappings on adapters, address translation, and the isolation check.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::alloc::{AdapterSpace, AllocError, Resource, Slot};
use crate::ids::{AdapterId, Fdid, LeaseId, MappingId, NodeId};
use crate::topology::Topology;

/// What a mapping connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MappingKind {
    /// A device BAR made visible in a borrower's address space (through the borrower's adapter).
    Bar {
        /// The device.
        fdid: Fdid,
        /// BAR index.
        bar: u8,
        /// The borrower that may access it.
        borrower: NodeId,
    },
    /// A borrower memory range made reachable by a device's DMA (through the lender's adapter).
    Dma {
        /// The device allowed to use it.
        fdid: Fdid,
        /// Whose memory.
        borrower: NodeId,
        /// Start of the range in the borrower's physical memory.
        borrower_base: u64,
    },
}

impl MappingKind {
    /// The device concerned.
    pub fn fdid(&self) -> Fdid {
        match self {
            Self::Bar { fdid, .. } | Self::Dma { fdid, .. } => *fdid,
        }
    }

    /// The borrower concerned.
    pub fn borrower(&self) -> NodeId {
        match self {
            Self::Bar { borrower, .. } | Self::Dma { borrower, .. } => *borrower,
        }
    }
}

/// One live mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mapping {
    /// Id.
    pub id: MappingId,
    /// The lease it belongs to.
    pub lease: LeaseId,
    /// What it connects.
    pub kind: MappingKind,
    /// Adapter holding it.
    pub adapter: AdapterId,
    /// Where it sits in the adapter's mapping space.
    pub slot: Slot,
    /// Address on the adapter's host where the range starts.
    pub host_addr: u64,
    /// Bytes mapped.
    pub size: u64,
}

/// Why a map request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// No route between the borrower and the lender.
    #[error("no route between {borrower} and {lender}")]
    NoRoute {
        /// Borrower.
        borrower: NodeId,
        /// Lender.
        lender: NodeId,
    },
    /// The adapter could not hold it.
    #[error("adapter {adapter}: {source}")]
    Adapter {
        /// Which adapter.
        adapter: AdapterId,
        /// Why.
        #[source]
        source: AllocError,
    },
    /// The adapter's requester-id table is full.
    #[error("adapter {adapter}: requester slots exhausted ({slots} in use)")]
    RequesterSlots {
        /// Which adapter.
        adapter: AdapterId,
        /// Slots.
        slots: u32,
    },
}

/// Why an access did not reach anything. On real NTB hardware such reads return all ones and writes are
/// dropped; the simulator turns these into exactly that plus an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum AccessFault {
    /// No mapping covers the address on this host.
    #[error("{node}: {addr:#x} is not mapped")]
    Unmapped {
        /// Host.
        node: NodeId,
        /// Address.
        addr: u64,
    },
    /// The device's DMA hit a window mapped for another device.
    #[error("{fdid}: DMA to {addr:#x} hits a window of {owner}")]
    NotForThisDevice {
        /// The device.
        fdid: Fdid,
        /// Address.
        addr: u64,
        /// Whose window it is.
        owner: Fdid,
    },
}

/// Where a borrower's access lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BarTarget {
    /// Device.
    pub fdid: Fdid,
    /// BAR.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u64,
    /// The mapping used.
    pub mapping: MappingId,
}

/// Where a device's DMA lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DmaTarget {
    /// Borrower whose memory is reached.
    pub borrower: NodeId,
    /// Physical address in the borrower.
    pub phys: u64,
    /// The mapping used.
    pub mapping: MappingId,
}

/// A broken isolation invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum IsolationViolation {
    /// A mapping outlived its lease.
    #[error("{mapping} of {lease} exists but the lease is not active")]
    MappingWithoutLease {
        /// Mapping.
        mapping: MappingId,
        /// Lease.
        lease: LeaseId,
    },
    /// A lease reaches a device it was not granted.
    #[error("{mapping} gives {borrower} access to {fdid}, which {lease} does not cover")]
    WrongDevice {
        /// Mapping.
        mapping: MappingId,
        /// Lease.
        lease: LeaseId,
        /// Borrower.
        borrower: NodeId,
        /// Device.
        fdid: Fdid,
    },
    /// Two mappings overlap on one adapter.
    #[error("{a} and {b} overlap on {adapter}")]
    Overlap {
        /// Adapter.
        adapter: AdapterId,
        /// First.
        a: MappingId,
        /// Second.
        b: MappingId,
    },
}

/// What a lease grants, as the control plane sees it (the fabric only checks against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Device.
    pub fdid: Fdid,
    /// Borrower.
    pub borrower: NodeId,
}

/// Base of every adapter's mapping space in its host's physical address map. Real NTB BARs sit high,
/// above 4 GiB with "above 4G decoding"; each adapter index gets its own 16 TiB region.
pub const ADAPTER_BASE: u64 = 0x1000_0000_0000;
const ADAPTER_STRIDE: u64 = 0x1000_0000_0000;

/// The live fabric.
#[derive(Debug, Clone)]
pub struct Fabric {
    topology: Topology,
    spaces: BTreeMap<AdapterId, AdapterSpace>,
    mappings: BTreeMap<MappingId, Mapping>,
    next_id: u64,
}

impl Fabric {
    /// A fabric with nothing mapped.
    pub fn new(topology: Topology) -> Self {
        let spaces = topology
            .adapters()
            .map(|(id, p)| (id, AdapterSpace::new(p.clone())))
            .collect();
        Self {
            topology,
            spaces,
            mappings: BTreeMap::new(),
            next_id: 1,
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Live mappings.
    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.values()
    }

    /// An adapter's allocation state.
    pub fn space(&self, adapter: AdapterId) -> Option<&AdapterSpace> {
        self.spaces.get(&adapter)
    }

    fn adapter_base(adapter: AdapterId) -> u64 {
        ADAPTER_BASE.saturating_add(u64::from(adapter.index).saturating_mul(ADAPTER_STRIDE))
    }

    fn insert(
        &mut self,
        lease: LeaseId,
        kind: MappingKind,
        adapter: AdapterId,
        size: u64,
    ) -> Result<MappingId, MapError> {
        let space = self.spaces.get_mut(&adapter).ok_or(MapError::NoRoute {
            borrower: kind.borrower(),
            lender: kind.fdid().node,
        })?;
        // One requester-table entry per device crossing this adapter.
        if let Some(slots) = space.profile().requester_slots {
            let devices: BTreeSet<Fdid> = self
                .mappings
                .values()
                .filter(|m| m.adapter == adapter)
                .map(|m| m.kind.fdid())
                .collect();
            if !devices.contains(&kind.fdid())
                && devices.len() >= usize::try_from(slots).unwrap_or(usize::MAX)
            {
                return Err(MapError::RequesterSlots { adapter, slots });
            }
        }
        let slot = space
            .allocate(size)
            .map_err(|source| MapError::Adapter { adapter, source })?;
        let host_addr = Self::adapter_base(adapter).saturating_add(space.offset_of(slot));
        let id = MappingId(self.next_id);
        self.next_id += 1;
        self.mappings.insert(
            id,
            Mapping {
                id,
                lease,
                kind,
                adapter,
                slot,
                host_addr,
                size,
            },
        );
        Ok(id)
    }

    /// Maps BAR `bar` (of `size` bytes) of `fdid` into `borrower`'s address space for `lease`.
    ///
    /// # Errors
    /// No route, or the borrower's adapter is out of the resource the BAR needs.
    pub fn map_bar(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        bar: u8,
        size: u64,
        borrower: NodeId,
    ) -> Result<MappingId, MapError> {
        let (b_adapter, _, _) =
            self.topology
                .best_route(borrower, fdid.node)
                .ok_or(MapError::NoRoute {
                    borrower,
                    lender: fdid.node,
                })?;
        self.insert(
            lease,
            MappingKind::Bar {
                fdid,
                bar,
                borrower,
            },
            b_adapter,
            size,
        )
    }

    /// Maps `size` bytes of `borrower` memory at `borrower_base` for `fdid`'s DMA, through the lender's adapter.
    ///
    /// # Errors
    /// No route, or the lender's adapter is out of room.
    pub fn map_dma(
        &mut self,
        lease: LeaseId,
        fdid: Fdid,
        borrower: NodeId,
        borrower_base: u64,
        size: u64,
    ) -> Result<MappingId, MapError> {
        let (_, l_adapter, _) =
            self.topology
                .best_route(borrower, fdid.node)
                .ok_or(MapError::NoRoute {
                    borrower,
                    lender: fdid.node,
                })?;
        self.insert(
            lease,
            MappingKind::Dma {
                fdid,
                borrower,
                borrower_base,
            },
            l_adapter,
            size,
        )
    }

    /// Removes a mapping and frees its slot. Unknown ids are ignored, so a rerun is harmless.
    pub fn unmap(&mut self, id: MappingId) -> Option<Mapping> {
        let m = self.mappings.remove(&id)?;
        if let Some(space) = self.spaces.get_mut(&m.adapter) {
            space.free(m.slot);
        }
        Some(m)
    }

    /// Removes every mapping of a lease (release, expiry or fence all end here). Returns what was removed.
    pub fn unmap_lease(&mut self, lease: LeaseId) -> Vec<Mapping> {
        let ids: Vec<MappingId> = self
            .mappings
            .values()
            .filter(|m| m.lease == lease)
            .map(|m| m.id)
            .collect();
        ids.into_iter().filter_map(|id| self.unmap(id)).collect()
    }

    /// Removes every mapping that involves `node` as borrower or lender (a host lost, a link cut for good).
    pub fn unmap_node(&mut self, node: NodeId) -> Vec<Mapping> {
        let ids: Vec<MappingId> = self
            .mappings
            .values()
            .filter(|m| {
                m.kind.borrower() == node || m.kind.fdid().node == node || m.adapter.node == node
            })
            .map(|m| m.id)
            .collect();
        ids.into_iter().filter_map(|id| self.unmap(id)).collect()
    }

    /// A borrower's access to `addr`: which device BAR it reaches.
    ///
    /// # Errors
    /// [`AccessFault::Unmapped`] when no BAR mapping on that host covers the address.
    pub fn translate_access(&self, node: NodeId, addr: u64) -> Result<BarTarget, AccessFault> {
        self.mappings
            .values()
            .filter(|m| m.adapter.node == node)
            .find_map(|m| match m.kind {
                MappingKind::Bar { fdid, bar, .. }
                    if addr >= m.host_addr && addr - m.host_addr < m.size =>
                {
                    Some(BarTarget {
                        fdid,
                        bar,
                        offset: addr - m.host_addr,
                        mapping: m.id,
                    })
                }
                _ => None,
            })
            .ok_or(AccessFault::Unmapped { node, addr })
    }

    /// A device's DMA to `addr` (an address in its lender's space): whose memory it reaches.
    ///
    /// # Errors
    /// [`AccessFault::Unmapped`] outside every DMA window, [`AccessFault::NotForThisDevice`] inside a
    /// window mapped for another device.
    pub fn translate_dma(&self, fdid: Fdid, addr: u64) -> Result<DmaTarget, AccessFault> {
        let hit = self.mappings.values().find(|m| {
            m.adapter.node == fdid.node
                && matches!(m.kind, MappingKind::Dma { .. })
                && addr >= m.host_addr
                && addr - m.host_addr < m.size
        });
        match hit {
            Some(m) => match m.kind {
                MappingKind::Dma {
                    fdid: owner,
                    borrower,
                    borrower_base,
                } if owner == fdid => Ok(DmaTarget {
                    borrower,
                    phys: borrower_base.saturating_add(addr - m.host_addr),
                    mapping: m.id,
                }),
                other => Err(AccessFault::NotForThisDevice {
                    fdid,
                    addr,
                    owner: other.fdid(),
                }),
            },
            None => Err(AccessFault::Unmapped {
                node: fdid.node,
                addr,
            }),
        }
    }

    /// Checks the isolation invariant against the active leases: every mapping belongs to an active lease,
    /// connects exactly the device and borrower that lease was granted, and no two mappings overlap.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check_isolation(
        &self,
        leases: &BTreeMap<LeaseId, Grant>,
    ) -> Result<(), IsolationViolation> {
        for m in self.mappings.values() {
            let Some(grant) = leases.get(&m.lease) else {
                return Err(IsolationViolation::MappingWithoutLease {
                    mapping: m.id,
                    lease: m.lease,
                });
            };
            if grant.fdid != m.kind.fdid() || grant.borrower != m.kind.borrower() {
                return Err(IsolationViolation::WrongDevice {
                    mapping: m.id,
                    lease: m.lease,
                    borrower: m.kind.borrower(),
                    fdid: m.kind.fdid(),
                });
            }
        }
        let mut by_adapter: BTreeMap<AdapterId, Vec<&Mapping>> = BTreeMap::new();
        for m in self.mappings.values() {
            by_adapter.entry(m.adapter).or_default().push(m);
        }
        for (adapter, mut ms) in by_adapter {
            ms.sort_by_key(|m| m.host_addr);
            for pair in ms.windows(2) {
                if pair[0].host_addr.saturating_add(pair[0].size) > pair[1].host_addr {
                    return Err(IsolationViolation::Overlap {
                        adapter,
                        a: pair[0].id,
                        b: pair[1].id,
                    });
                }
            }
        }
        Ok(())
    }

    /// True when no adapter holds any allocation (nothing leaked).
    pub fn is_idle(&self) -> bool {
        self.mappings.is_empty() && self.spaces.values().all(AdapterSpace::is_empty)
    }

    /// Free units of one resource on one adapter.
    pub fn free(&self, adapter: AdapterId, resource: Resource) -> Option<u64> {
        let (direct, lut, aperture) = self.spaces.get(&adapter)?.free_counts();
        Some(match resource {
            Resource::DirectWindows => direct,
            Resource::LutEntries => lut,
            Resource::Aperture => aperture,
            Resource::RequesterSlots => {
                let used: BTreeSet<Fdid> = self
                    .mappings
                    .values()
                    .filter(|m| m.adapter == adapter)
                    .map(|m| m.kind.fdid())
                    .collect();
                let slots = self
                    .spaces
                    .get(&adapter)?
                    .profile()
                    .requester_slots
                    .map_or(u64::MAX, u64::from);
                slots.saturating_sub(used.len() as u64)
            }
        })
    }
}
