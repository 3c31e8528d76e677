//! Integration tests of the `pcipool` binary: CLI behaviour on fake sysfs trees, decode parity with
//! `lspci -F ... -vvv` on every fixture, and the inventory of this machine against `lspci -nnk`.

#[cfg(test)]
mod agents;
#[cfg(test)]
mod cli;
#[cfg(test)]
mod cluster;
#[cfg(test)]
mod crash;
#[cfg(test)]
mod dev;
#[cfg(test)]
mod etcd;
#[cfg(test)]
mod faults;
#[cfg(test)]
mod host;
#[cfg(test)]
mod host_ops;
#[cfg(test)]
mod lspci_text;
#[cfg(test)]
mod packaging;
#[cfg(test)]
mod parity;
#[cfg(test)]
mod qualify;
#[cfg(test)]
mod redfish;
#[cfg(test)]
mod report_html;
#[cfg(test)]
mod shared_access;
#[cfg(test)]
mod snapshots;
#[cfg(test)]
mod support;
#[cfg(test)]
mod ui;
