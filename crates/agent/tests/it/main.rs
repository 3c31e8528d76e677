//! The step runner over a second, minimal backend written in the test.

#[cfg(test)]
mod whole_device_fabric;
