//! Integration tests of the Linux backend: fake sysfs trees for every behaviour, and the real
//! read-only `/sys` of the machine running the tests.

#[cfg(test)]
mod control;
#[cfg(test)]
mod fake_tree;
#[cfg(test)]
mod real_host;
