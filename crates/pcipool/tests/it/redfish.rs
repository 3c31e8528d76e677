//! The pool as a Redfish service (`/redfish/v1` on `pcipool dev`): the service root without a token,
//! HTTP Basic with the pool token, and resource blocks that follow a lend made with the CLI.

use crate::dev::{cli, start};

fn get(url: &str, basic: Option<&str>) -> (u16, Option<String>, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = basic {
        use base64::Engine as _;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("operator:{token}"));
        request = request.header("authorization", &format!("Basic {pair}"));
    }
    let mut resp = request.call().expect("served");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = resp.status().as_u16();
    (
        status,
        challenge,
        resp.body_mut().read_json().unwrap_or_default(),
    )
}

#[test]
fn resource_blocks_follow_a_lend_and_basic_auth_takes_the_pool_token() {
    let dev = start();
    let root = format!("{}/redfish/v1", dev.url);
    let (root_status, _, service) = get(&root, None);
    let (anonymous, challenge, refusal) = get(&format!("{root}/Systems"), None);
    let (_, _, systems) = get(&format!("{root}/Systems"), Some(&dev.token));
    let (_, _, blocks) = get(
        &format!("{root}/CompositionService/ResourceBlocks"),
        Some(&dev.token),
    );
    let lent = cli(
        &dev,
        &["borrow", "--device", "n1:0000:03:00.0", "--host", "n3"],
    );
    let block = format!("{root}/CompositionService/ResourceBlocks/n1_0000_03_00.0");
    let (_, _, composed) = get(&block, Some(&dev.token));
    let (_, _, n3) = get(&format!("{root}/Systems/n3"), Some(&dev.token));
    let released = cli(&dev, &["release", "1"]);
    let (_, _, unused) = get(&block, Some(&dev.token));
    let (missing, _, _) = get(&format!("{root}/Systems/n99"), Some(&dev.token));
    // Signing in: the root is open, the rest asks for HTTP Basic.
    assert_eq!(
        (
            root_status,
            service["CompositionService"]["@odata.id"].as_str(),
            anonymous,
            challenge.as_deref(),
            refusal["error"]["code"].as_str(),
            systems["Members@odata.count"].as_u64(),
            blocks["Members@odata.count"].as_u64(),
            missing,
        ),
        (
            200,
            Some("/redfish/v1/CompositionService"),
            401,
            Some("Basic realm=\"pcipool\""),
            Some("Base.1.8.NoValidSession"),
            Some(4),
            Some(9),
            404,
        )
    );
    // The lend composes the block onto n3's system; the release frees it.
    assert_eq!(
        (
            lent.status.success(),
            composed["CompositionStatus"]["CompositionState"].as_str(),
            composed["Links"]["ComputerSystems"][0]["@odata.id"].as_str(),
            n3["Links"]["ResourceBlocks"][0]["@odata.id"].as_str(),
            released.status.success(),
            unused["CompositionStatus"]["CompositionState"].as_str(),
        ),
        (
            true,
            Some("Composed"),
            Some("/redfish/v1/Systems/n3"),
            Some("/redfish/v1/CompositionService/ResourceBlocks/n1_0000_03_00.0"),
            true,
            Some("Unused"),
        ),
        "{composed}"
    );
}
