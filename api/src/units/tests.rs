//! Table tests of the three grammars, good input and bad.

use super::*;

#[test]
fn byte_sizes_accept_binary_decimal_and_kubernetes_units() {
    for (text, bytes) in [
        ("1024", 1024),
        ("0", 0),
        (" 7 ", 7),
        ("12B", 12),
        ("64MiB", 64 << 20),
        ("64mib", 64 << 20),
        ("1GiB", 1 << 30),
        ("512Mi", 512 << 20),
        ("2K", 2048),
        ("1M", 1 << 20),
        ("1G", 1 << 30),
        ("1TiB", 1 << 40),
        ("10MB", 10_000_000),
        ("3kb", 3_000),
        ("2GB", 2_000_000_000),
        ("1TB", 1_000_000_000_000),
        ("256 MiB", 256 << 20),
    ] {
        assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
    }
}

#[test]
fn byte_sizes_refuse_anything_else() {
    for (text, expected) in [
        ("64XB", "unknown unit 'XB' in '64XB'"),
        ("1.5GiB", "unknown unit '.5GiB'"),
        ("1Pi", "unknown unit 'Pi'"),
        ("MiB", "'MiB' is not a byte size"),
        ("", "'' is not a byte size"),
        ("-1", "'-1' is not a byte size"),
        ("99999999999999999999", "is too large"),
        ("17179869184GiB", "is too large"),
    ] {
        let err = parse_bytes(text).expect_err(text).to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn durations_accept_units() {
    for (text, duration) in [
        ("30", Duration::from_secs(30)),
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("250ms", Duration::from_millis(250)),
        ("2h", Duration::from_secs(7200)),
        ("1d", Duration::from_secs(86_400)),
        ("0", Duration::ZERO),
        (" 10s ", Duration::from_secs(10)),
    ] {
        assert_eq!(parse_duration(text), Ok(duration), "{text}");
    }
}

#[test]
fn durations_refuse_anything_else() {
    for (text, expected) in [
        ("", "is not a duration"),
        ("s", "is not a duration"),
        ("-5s", "is not a duration"),
        ("5 weeks", "unknown unit ' weeks'"),
        ("5M", "unknown unit 'M'"),
        ("1.5h", "unknown unit '.5h'"),
        ("99999999999999999999", "is not a duration"),
        ("999999999999999999d", "is too large"),
    ] {
        let err = parse_duration(text).expect_err(text).to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

fn quantity(text: &str) -> Quantity {
    text.parse()
        .unwrap_or_else(|e| panic!("{text} is a quantity: {e}"))
}

#[test]
fn quantities_are_exact_whole_numbers_rounded_up() {
    for (text, value) in [
        ("0", 0),
        ("1500000", 1_500_000),
        ("+7", 7),
        ("512Mi", 512 << 20),
        ("1Gi", 1 << 30),
        ("1.5Gi", 1_610_612_736),
        ("0.5Gi", 1 << 29),
        (".5Ki", 512),
        ("5.", 5),
        ("1536Mi", 1_610_612_736),
        ("1Pi", 1 << 50),
        ("1Ei", 1 << 60),
        ("1k", 1_000),
        ("1M", 1_000_000),
        ("1G", 1_000_000_000),
        ("2T", 2_000_000_000_000),
        ("1P", 1_000_000_000_000_000),
        ("1E", 1_000_000_000_000_000_000),
        ("2e9", 2_000_000_000),
        ("1.5E3", 1_500),
        ("25e-1", 3),
        ("1000000000000m", 1_000_000_000),
        ("1500m", 2),
        ("100m", 1),
        ("1n", 1),
        ("-0", 0),
        ("1e-400", 1),
    ] {
        assert_eq!(quantity(text).ceil_u64(), Some(value), "{text}");
    }
    for out_of_range in ["-1Gi", "-1m", "16Ei", "1e30"] {
        assert_eq!(quantity(out_of_range).ceil_u64(), None, "{out_of_range}");
    }
}

#[test]
fn quantities_refuse_what_the_api_server_refuses() {
    for text in [
        "", "Gi", ".", "-", "+", "1.2.3", "1 Gi", "1gi", "1K", "1KiB", "1MB", "12Q", "1e", "1e+",
        "1ee3", "e3", "1Gi5", "lots", "0x10", "1,5Gi",
    ] {
        let err = text.parse::<Quantity>().expect_err(text);
        assert_eq!(
            err,
            UnitError::NotQuantity(text.trim().to_owned()),
            "{text}"
        );
    }
    let huge = "9".repeat(40);
    assert!(matches!(
        huge.parse::<Quantity>(),
        Err(UnitError::TooLarge(_))
    ));
}

/// The process kubelet's downward API reads quantities as floats; these are the values
/// its own tests expect (tests/src/kubelet/downward.rs).
#[test]
fn quantities_serve_the_kubelets_downward_api() {
    for (text, value) in [
        ("64Mi", 67_108_864.0),
        ("1500m", 1.5),
        ("2e3", 2000.0),
        ("1.5Gi", 1_610_612_736.0),
        ("3", 3.0),
        ("250m", 0.25),
        ("-2k", -2000.0),
    ] {
        assert_eq!(quantity(text).to_f64(), value, "{text}");
    }
    assert!("12Q".parse::<Quantity>().is_err());
}
