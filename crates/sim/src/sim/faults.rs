//! The simulator's fault verbs: what the simulated hardware does wrong on purpose.

use pcipool_fabric::{AdapterId, NodeId};
use pcipool_pcie::Bdf;

use super::{EventKind, Sim};

impl Sim {
    /// The host crashes: every driver unbinds without cleanup, the host stops answering.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(h) = self.hosts.get_mut(&node)
            && h.up
        {
            h.up = false;
            self.log(node, EventKind::HostCrashed);
        }
    }

    /// The host boots again: devices come back in power-on state with their boot drivers unbound.
    pub fn reboot(&mut self, node: NodeId) {
        if let Some(h) = self.hosts.get_mut(&node)
            && !h.up
        {
            h.up = true;
            // Borrowed devices do not survive a reboot: the kernel that had them is gone.
            h.devices.retain(|_, d| d.remote.is_none());
            for d in h.devices.values_mut() {
                d.present = true;
                d.users = 0;
                d.driver = None;
                d.dev.apply_reset();
            }
            self.log(node, EventKind::HostRebooted);
        }
    }

    /// An adapter's link goes down: accesses through it fault until it comes back.
    pub fn link_down(&mut self, adapter: AdapterId) {
        if self.links_down.insert(adapter) {
            self.log(adapter.node, EventKind::LinkDown { adapter });
        }
    }

    /// An adapter's link comes back.
    pub fn link_up(&mut self, adapter: AdapterId) {
        if self.links_down.remove(&adapter) {
            self.log(adapter.node, EventKind::LinkUp { adapter });
        }
    }

    /// The device stops responding.
    pub fn hang(&mut self, node: NodeId, bdf: Bdf) {
        if let Some(d) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.devices.get_mut(&bdf))
        {
            d.dev.hung = true;
            self.log(node, EventKind::Hung { bdf });
        }
    }

    /// The next reset of the device fails.
    pub fn fail_next_reset(&mut self, node: NodeId, bdf: Bdf) {
        self.fail_resets(node, bdf, 1);
    }

    /// The next `count` resets of the device fail (2: the function-level reset and the escalated bus
    /// reset both fail, and the device is lost to the pool until repaired).
    pub fn fail_resets(&mut self, node: NodeId, bdf: Bdf, count: u32) {
        if let Some(d) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.devices.get_mut(&bdf))
        {
            d.resets_failing = count;
        }
    }

    /// An operator repairs the device (reseats it, power-cycles its slot): present, responding, at its
    /// power-on state, no pending faults.
    pub fn repair(&mut self, node: NodeId, bdf: Bdf) {
        if let Some(d) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.devices.get_mut(&bdf))
        {
            d.present = true;
            d.resets_failing = 0;
            d.unbind_hangs = false;
            d.dev.apply_reset();
        }
    }

    /// The next unbind of the device hangs.
    pub fn hang_next_unbind(&mut self, node: NodeId, bdf: Bdf) {
        if let Some(d) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.devices.get_mut(&bdf))
        {
            d.unbind_hangs = true;
        }
    }

    /// The device disappears without notice (pulled card, dead slot).
    pub fn surprise_remove(&mut self, node: NodeId, bdf: Bdf) {
        if let Some(d) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.devices.get_mut(&bdf))
            && d.present
        {
            d.present = false;
            d.driver = None;
            self.log(node, EventKind::SurpriseRemoved { bdf });
        }
    }

    /// Users open (or close, with a negative delta) the device.
    pub fn set_users(&mut self, node: NodeId, bdf: Bdf, users: u32) {
        if let Some(d) = self
            .hosts
            .get_mut(&node)
            .and_then(|h| h.devices.get_mut(&bdf))
        {
            d.users = users;
        }
    }

    /// Every later step takes `factor` times longer (0 is treated as 1).
    pub fn slow_steps(&mut self, factor: u64) {
        self.slow_factor = factor.max(1);
    }
}
