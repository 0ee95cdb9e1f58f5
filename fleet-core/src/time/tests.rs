use super::*;
use proptest::prelude::*;

#[test]
fn known_instants() {
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z", "t").unwrap(), 0);
    assert_eq!(
        parse_rfc3339_ms("2000-03-01T00:00:00Z", "t").unwrap(),
        951_868_800_000
    );
    assert_eq!(
        parse_rfc3339_ms("2026-08-22T09:29:57.5-07:00", "t").unwrap(),
        1_787_416_197_500
    );
    assert_eq!(
        parse_rfc3339_ms("2026-08-22T16:29:57.500999999Z", "t").unwrap(),
        1_787_416_197_500
    );
    assert_eq!(
        parse_rfc3339_ms("2024-02-29T23:59:59+05:30", "t").unwrap(),
        1_709_231_399_000
    );
}

#[test]
fn rejects_with_the_field_name() {
    for bad in [
        "",
        "2026-08-22",
        "2026-08-22T16:29:57",
        "2026-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z",
        "2026-08-22T24:00:00Z",
        "2026-08-22T16:29:57.Z",
        "2026-08-22T16:29:57+0700",
        "1969-12-31T23:59:59Z",
        "2026-08-22T16:29:57Zjunk",
        "2026-08-2２T16:29:57Z",
    ] {
        let err = parse_rfc3339_ms(bad, "gpu_stats[0].timestamp").unwrap_err();
        assert!(
            err.to_string().contains("gpu_stats[0].timestamp"),
            "{bad}: {err}"
        );
    }
}

proptest! {
    #[test]
    fn format_then_parse_round_trips(ms in 0u64..8_000_000_000_000) {
        prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms), "t").unwrap(), ms);
    }

    #[test]
    fn never_panics(s in "\\PC{0,40}") {
        let _ = parse_rfc3339_ms(&s, "t");
    }
}
