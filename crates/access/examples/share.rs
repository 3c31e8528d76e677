//! Shares one NVMe drive of a running pool between two applications, as a manager and a client.
//!
//! ```sh
//! cargo run --release -- dev            # prints PCIPOOL_URL and PCIPOOL_TOKEN; in another shell:
//! PCIPOOL_URL=... PCIPOOL_TOKEN=... cargo run --example share -p pcipool-access
//! ```
//! The fabric URL defaults to the controller's (as `pcipool dev` serves both); set PCIPOOL_FABRIC_URL
//! for a pool whose fabric is `pcipool sim serve`.

use pcipool_access::{Config, Filter, Mode, Pool};
use pcipool_sim_datapath::driver::{BlockIo as _, Driver, SharedClient, layout};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let controller =
        std::env::var("PCIPOOL_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let fabric = std::env::var("PCIPOOL_FABRIC_URL").unwrap_or_else(|_| controller.clone());
    let token =
        std::env::var("PCIPOOL_TOKEN").map_err(|_| "set PCIPOOL_TOKEN (pcipool dev prints it)")?;
    let app = |host: &str| {
        Pool::connect(&Config {
            controller: controller.clone(),
            fabric: fabric.clone(),
            token: token.clone(),
            host: host.into(),
            lease_secs: None,
        })
    };
    let (n3, n4) = (app("n3")?, app("n4")?);
    let drives = n3.find(&Filter {
        on_data_path: true,
        ..Filter::default()
    })?;
    let fdid = drives
        .first()
        .ok_or("no drive on the data path")?
        .fdid
        .to_string();

    // The manager on n3: borrows alone, brings the controller up, then lets others in.
    let manager = n3.borrow(&fdid, Mode::Exclusive)?;
    let mseg = n3.segment("manager", layout::SEGMENT)?;
    let mdma = manager.map_for_dma(&mseg)?;
    let mut native = Driver::new(manager.map_bar()?, mseg.reopen()?, mdma.device_addr(), 1);
    native.enable()?;
    native.create_io_queues(1, mdma.device_addr())?;
    manager.downgrade(4)?;

    // The client on n4: its own window, memory and queue pair (created by the manager).
    let client = n4.borrow(&fdid, Mode::Shared { max_sharers: 4 })?;
    let cseg = n4.segment("client", layout::SEGMENT)?;
    let cdma = client.map_for_dma(&cseg)?;
    native.create_io_queues(2, cdma.device_addr())?;
    let mut shared = SharedClient::new(client.map_bar()?, cseg.reopen()?, cdma.device_addr(), 2);

    shared
        .seg()
        .write(layout::DATA, b"written by n4 through its own queue pair")?;
    shared.write(100, 1, 0)?;
    native.read(100, 1, 0)?;
    let mut back = [0u8; 40];
    native.seg.read(layout::DATA, &mut back)?;
    println!(
        "{fdid}: n3 reads back what n4 wrote: {:?}",
        String::from_utf8_lossy(&back)
    );
    client.give_back()?;
    manager.give_back()?;
    Ok(())
}
