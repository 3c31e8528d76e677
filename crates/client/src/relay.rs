//! `pcipool relay ADDR`: one TCP connection to ADDR, copied both ways with this process's stdin and
//! stdout. QEMU's user network runs it once per guest connection to a forwarded address
//! (`guestfwd=...-cmd:pcipool relay 127.0.0.1:7070`), so a guest reaches a service on the machine
//! while no packet leaves QEMU.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

/// Relays until both directions are closed.
///
/// # Errors
/// The connection cannot be made; copy errors other than the peer going away.
pub fn run(addr: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    let mut to_service = stream.try_clone()?;
    let upstream = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stdin = std::io::stdin().lock();
        let copied = std::io::copy(&mut stdin, &mut to_service);
        // The guest finished sending: tell the service, which may still answer.
        let _already_closed = to_service.shutdown(Shutdown::Write);
        copied.map(|_| ())
    });
    let mut from_service = stream;
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from_service.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e),
        };
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
    // Stdin may never close (QEMU keeps it open); the service has finished, so the relay has too.
    drop(upstream);
    Ok(())
}
