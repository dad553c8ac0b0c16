//! `add_host_metadata`: the `host` object Beats adds (name, id, architecture, os, ip, mac),
//! read once from the machine when the processor is built.

use serde_json::{Map, Value, json};

/// The `host` object of this machine; with `netinfo`, its addresses and MACs too.
pub fn metadata(netinfo: bool) -> Value {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let os = os_release();
    let mut os_obj = Map::new();
    os_obj.insert("type".into(), json!("linux"));
    os_obj.insert("kernel".into(), json!(kernel.trim()));
    for (k, key) in [
        ("name", "NAME"),
        ("version", "VERSION"),
        ("platform", "ID"),
        ("family", "ID_LIKE"),
        ("codename", "VERSION_CODENAME"),
    ] {
        if let Some(v) = os.get(key) {
            os_obj.insert(k.into(), json!(v));
        }
    }
    if !os_obj.contains_key("family")
        && let Some(id) = os.get("ID")
    {
        os_obj.insert("family".into(), json!(id));
    }
    let mut host = Map::new();
    host.insert("name".into(), json!(hostname));
    host.insert("hostname".into(), json!(hostname));
    host.insert("architecture".into(), json!(std::env::consts::ARCH));
    host.insert("os".into(), Value::Object(os_obj));
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        host.insert("id".into(), json!(id.trim()));
    }
    if netinfo {
        let (ips, macs) = addresses();
        host.insert("ip".into(), json!(ips));
        host.insert("mac".into(), json!(macs));
    }
    Value::Object(host)
}

fn os_release() -> std::collections::HashMap<String, String> {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Every address of every interface but loopback, and their MACs (Beats' form,
/// `00-11-22-AA-BB-CC`).
fn addresses() -> (Vec<String>, Vec<String>) {
    let mut ips = Vec::new();
    let mut macs = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                std::net::IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !ip.is_loopback() && !ips.contains(&ip.to_string()) {
                ips.push(ip.to_string());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        for d in dir.flatten() {
            let Ok(mac) = std::fs::read_to_string(d.path().join("address")) else {
                continue;
            };
            let mac = mac.trim().to_ascii_uppercase().replace(':', "-");
            if !mac.is_empty() && mac != "00-00-00-00-00-00" && !macs.contains(&mac) {
                macs.push(mac);
            }
        }
    }
    macs.sort();
    (ips, macs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_this_machine() {
        let h = super::metadata(true);
        let name = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(h["name"], name);
        assert_eq!(h["os"]["type"], "linux");
        assert_eq!(h["architecture"], std::env::consts::ARCH);
        assert!(h["ip"].is_array() && h["mac"].is_array());
        assert!(super::metadata(false).get("ip").is_none());
    }
}
