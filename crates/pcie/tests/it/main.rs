//! Integration tests of the decoder: presets decode to what they were built from, hostile input never
//! panics (property tests), and the lspci dump codec round-trips.

#[cfg(test)]
mod hostile;
#[cfg(test)]
mod presets;
#[cfg(test)]
mod roundtrip;
