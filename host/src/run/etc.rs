//! The files the runner writes into the bundle and binds into the
//! container: resolv.conf and hosts.

use specwright_core::request::Network;

/// The host's resolv.conf without loopback nameservers (they mean nothing
/// in another network namespace), unless the step uses the host network.
pub fn resolv_conf_for(host_resolv: &str, network: &Network) -> String {
    host_resolv
        .lines()
        .filter(|l| {
            if *network == Network::Host {
                return true;
            }
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => !(addr.starts_with("127.") || addr == "::1"),
                _ => true,
            }
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// localhost and the step's hostname.
pub fn hosts_for(hostname: &str) -> String {
    let hostname = if hostname.is_empty() {
        specwright_core::buildkit::DEFAULT_HOSTNAME
    } else {
        hostname
    };
    format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_dropped_unless_host_network() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch example.com\n";
        assert_eq!(
            resolv_conf_for(host, &Network::None),
            "nameserver 10.0.0.2\nsearch example.com\n"
        );
        assert_eq!(resolv_conf_for(host, &Network::Host), host);
    }

    #[test]
    fn hosts_name_the_step() {
        assert!(hosts_for("").contains("127.0.0.1\tbuildkitsandbox"));
        assert!(hosts_for("h1").contains("127.0.0.1\th1"));
    }
}
