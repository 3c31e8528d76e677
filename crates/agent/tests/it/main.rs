//! The step runner over a second, minimal backend written in the test.

#[cfg(test)]
mod linux_agent;
#[cfg(test)]
mod whole_device_fabric;
