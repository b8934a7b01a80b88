use super::*;
use crate::destination::parse_ipv4_loose;
use std::net::Ipv4Addr;

fn settings() -> EgressSettings {
    EgressSettings::default()
}

fn check(url: &str, settings: &EgressSettings, own: &[u16]) -> Result<(), EgressError> {
    let url = UpstreamUrl::parse(url).unwrap();
    Egress { settings, own_ports: own }.check(&url)
}

/// Every encoding of SECURITY-CATALOGUE B-27, refused by default with the reason that fits.
#[test]
fn the_catalogue_b27_destinations_are_refused() {
    use EgressError::*;
    let s = settings();
    for (url, want) in [
        ("http://169.254.169.254/latest/meta-data/", Metadata),
        ("http://169.254.169.254:80", Metadata),
        ("http://[fd00:ec2::254]/latest", Metadata),
        ("http://metadata.google.internal/computeMetadata/v1", Metadata),
        ("http://METADATA.GOOGLE.INTERNAL./x", Metadata),
        ("http://metadata/x", Metadata),
        ("http://0xA9FEA9FE/", Metadata),
        ("http://0xa9fea9fe/", Metadata),
        ("http://2852039166/", Metadata),
        ("http://0251.0376.0251.0376/", Metadata),
        ("http://0xA9.0xFE.0xA9.0xFE/", Metadata),
        ("http://169.254.43518/", Metadata),
        ("http://169.16689662/", Metadata),
        ("http://025177524776/", Metadata),
        ("http://169.254.169.254.nip.io/", Metadata),
        ("http://169-254-169-254.sslip.io/", Metadata),
        ("http://a9fea9fe.nip.io/", Metadata),
        ("http://[::ffff:169.254.169.254]/", Metadata),
        ("http://[::ffff:a9fe:a9fe]/", Metadata),
        ("http://[::169.254.169.254]/", Metadata),
        ("http://[64:ff9b::169.254.169.254]/", Metadata),
        ("http://[2002:a9fe:a9fe::1]/", Metadata),
        ("http://169.254.170.2/v2/credentials", Metadata),
        ("http://100.100.100.200/latest/meta-data", Metadata),
        ("http://169.254.1.1/", LinkLocal),
        ("http://[fe80::1]/", LinkLocal),
        ("http://[fe80::1%25eth0]/", LinkLocal),
        ("http://localhost:9901/", Loopback),
        ("http://api.localhost/", Loopback),
        ("http://127.0.0.1:8080/", Loopback),
        ("http://127.1/", Loopback),
        ("http://2130706433/", Loopback),
        ("http://0x7f000001/", Loopback),
        ("http://0/", Loopback),
        ("http://0.0.0.0/", Loopback),
        ("http://[::1]/", Loopback),
        ("http://[::]/", Loopback),
        ("http://[::ffff:127.0.0.1]/", Loopback),
        ("http://127.0.0.1.nip.io/", Loopback),
        ("http://localtest.me/", Loopback),
        ("http://10.0.0.5/v1", Private),
        ("http://172.20.1.1/v1", Private),
        ("http://192.168.1.10/v1", Private),
        ("http://100.64.0.1/v1", Private),
        ("http://[fd12:3456::1]/v1", Private),
        ("http://10-0-0-5.sslip.io/v1", Private),
        ("http://vllm.internal/v1", Private),
        ("http://224.0.0.1/", Reserved),
        ("http://255.255.255.255/", Reserved),
        ("http://[ff02::1]/", Reserved),
    ] {
        assert_eq!(check(url, &s, &[]), Err(want.clone()), "{url}");
        // the reason never repeats the URL
        assert!(!want.to_string().contains("169.254"), "{want}");
    }
    // file:// and gopher:// never reach the policy: the URL parser refuses the scheme
    assert!(UpstreamUrl::parse("file:///etc/passwd").is_err());
    assert!(UpstreamUrl::parse("gopher://169.254.169.254:70/").is_err());
}

#[test]
fn public_providers_pass() {
    let s = settings();
    for url in [
        "https://api.openai.com/v1",
        "https://api.anthropic.com/v1",
        "https://bedrock-runtime.us-east-1.amazonaws.com",
        "https://my-res.openai.azure.com/openai/deployments/gpt",
        "http://8.8.8.8/",
        "http://[2606:4700::1111]/",
        "http://deadbeef.example.com/", // a hex label outside wildcard DNS is a name
        "http://172.32.0.1/",
        "http://1.2.3.4.nip.io/",
    ] {
        assert_eq!(check(url, &s, &[]), Ok(()), "{url}");
    }
}

#[test]
fn allowances_are_explicit_and_narrow() {
    let loopback = EgressSettings { allow_loopback: true, ..Default::default() };
    assert_eq!(check("http://127.0.0.1:5000/v1", &loopback, &[8080, 9901]), Ok(()));
    assert_eq!(check("http://localhost:5000/v1", &loopback, &[]), Ok(()));
    // loopback does not open private, link-local or metadata, nor the gateway's own ports
    assert_eq!(check("http://10.0.0.1/", &loopback, &[]), Err(EgressError::Private));
    assert_eq!(check("http://169.254.169.254/", &loopback, &[]), Err(EgressError::Metadata));
    assert_eq!(check("http://127.0.0.1:9901/", &loopback, &[8080, 9901]), Err(EgressError::OwnPort));
    assert_eq!(check("http://localhost:8080/", &loopback, &[8080, 9901]), Err(EgressError::OwnPort));
    assert_eq!(check("http://[::1]:8080/", &loopback, &[8080]), Err(EgressError::OwnPort));
    let private = EgressSettings { allow_private: true, ..Default::default() };
    assert_eq!(check("http://10.0.0.1/", &private, &[]), Ok(()));
    assert_eq!(check("http://[fd12::1]/", &private, &[]), Ok(()));
    assert_eq!(check("http://127.0.0.1/", &private, &[]), Err(EgressError::Loopback));
    assert_eq!(check("http://[fd00:ec2::254]/", &private, &[]), Err(EgressError::Metadata));
    // an allow-list entry allows exactly that host (and port, when it names one)
    let listed = EgressSettings {
        allow_hosts: vec!["169.254.169.254:80".into(), "Model.Internal".into(), "[::1]:9901".into()],
        ..Default::default()
    };
    assert_eq!(check("http://169.254.169.254/", &listed, &[]), Ok(()));
    assert_eq!(check("http://169.254.169.254:8080/", &listed, &[]), Err(EgressError::Metadata));
    assert_eq!(check("http://0xA9FEA9FE/", &listed, &[]), Err(EgressError::Metadata), "listed as written, not as decoded");
    assert_eq!(check("http://model.internal:1234/", &listed, &[]), Ok(()));
    assert_eq!(check("http://[::1]:9901/", &listed, &[9901]), Ok(()));
}

#[test]
fn allow_entries_parse() {
    assert_eq!(allow_entry("Host.Example:8443"), Some(("host.example".into(), Some(8443))));
    assert_eq!(allow_entry("host.example"), Some(("host.example".into(), None)));
    assert_eq!(allow_entry("[fd00::1]:80"), Some(("fd00::1".into(), Some(80))));
    assert_eq!(allow_entry("[fd00::1]"), Some(("fd00::1".into(), None)));
    assert_eq!(allow_entry("fd00::1"), Some(("fd00::1".into(), None)));
    assert_eq!(allow_entry("host:99999"), None);
    assert_eq!(allow_entry("host:"), None);
    assert_eq!(allow_entry(" "), None);
    assert_eq!(allow_entry("[::1]x"), None);
}

#[test]
fn loose_ipv4_matches_inet_aton() {
    for (s, want) in [
        ("1.2.3.4", Some([1, 2, 3, 4])),
        ("1.2.3", Some([1, 2, 0, 3])),
        ("1.2", Some([1, 0, 0, 2])),
        ("16909060", Some([1, 2, 3, 4])),
        ("0x01020304", Some([1, 2, 3, 4])),
        ("01.02.03.04", Some([1, 2, 3, 4])),
        ("0x", Some([0, 0, 0, 0])),
        ("256.1.1.1", None),
        ("1.2.3.256", None),
        ("4294967296", None),
        ("08.1.1.1", None),
        ("1..2", None),
        ("1.2.3.4.5", None),
        ("example.com", None),
    ] {
        assert_eq!(parse_ipv4_loose(s), want.map(Ipv4Addr::from), "{s}");
    }
}
