//! pcipool on real Linux kernels: guests under QEMU whose kernels drive emulated NVMe drives (one with
//! SR-IOV), an Intel IOMMU and a virtio NIC with their own drivers. `pcipool` runs inside the guest;
//! every effect is checked through the guest kernel's own view (driver links, `/dev` nodes, IOMMU
//! groups, `sriov_numvfs`, config space), not through pcipool's report.

#[cfg(test)]
mod fabric;
#[cfg(test)]
mod failures;
#[cfg(test)]
mod guest;
#[cfg(test)]
mod host_ops;
#[cfg(test)]
mod lab;
#[cfg(test)]
mod lab_cli;
#[cfg(test)]
mod lend;
