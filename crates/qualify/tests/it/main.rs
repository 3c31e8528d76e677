//! One test (at least) per rule: each fails when its rule is removed from the table.

#[cfg(test)]
mod rules;
