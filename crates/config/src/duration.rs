//! Durations, periods and byte sizes as written in the policy file.
//!
//! - Durations: integer seconds (`30`), a string of digits (`"30"`, seconds), or a number
//!   with a unit: `ms`, `s`, `m`, `h`, `d` (`500ms`, `10s`, `5m`, `1h`, `1d`, `30d`).
//! - Periods (quota and rate-limit `renewal_period`): a duration greater than zero, or, for
//!   quotas only, `calendar-day`, `calendar-week`, `calendar-month`.
//! - Sizes: integer bytes (`512`), or a number with a unit: decimal `KB`, `MB`, `GB`, `TB`
//!   (powers of 1000) or binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); `B` is bytes.
//!   Units are matched without regard to case.

use crate::compiled::Period;
use crate::model::{ByteSize, DurationSpec};
use std::time::Duration;

const DURATION_HINT: &str =
    "expected integer seconds or a number with a unit: `500ms`, `10s`, `5m`, `1h`, `1d`";

/// One day: the longest upstream timeout, health check interval and JWT clock skew.
pub const ONE_DAY: Duration = Duration::from_secs(86_400);
/// 365 days: the longest cache lifetime, CORS `max_age` and rate-limit or quota period.
pub const ONE_YEAR: Duration = Duration::from_secs(365 * 86_400);

/// Parses a duration without an upper bound (zero is allowed). Validation uses
/// [`parse_duration_max`] and [`parse_positive_duration`], which bound every field.
pub fn parse_duration(spec: &DurationSpec) -> Result<Duration, String> {
    match spec {
        DurationSpec::Seconds(secs) => Ok(Duration::from_secs(*secs)),
        DurationSpec::Text(text) => parse_duration_str(text),
    }
}

/// Parses a duration of at most `max` (zero is allowed).
pub fn parse_duration_max(spec: &DurationSpec, max: Duration) -> Result<Duration, String> {
    let duration = parse_duration(spec)?;
    if duration > max {
        return Err(too_long(spec, max));
    }
    Ok(duration)
}

/// Parses a duration that must be greater than zero and at most `max`.
pub fn parse_positive_duration(spec: &DurationSpec, max: Duration) -> Result<Duration, String> {
    let duration = parse_duration_max(spec, max)?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".to_string());
    }
    Ok(duration)
}

/// `max` as written in a policy file: `1d`, `365d`, `90s`, `500ms`.
pub fn format_duration(max: Duration) -> String {
    let ms = max.as_millis();
    if ms.is_multiple_of(86_400_000) && ms > 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn too_long(spec: &DurationSpec, max: Duration) -> String {
    let written = match spec {
        DurationSpec::Seconds(secs) => secs.to_string(),
        DurationSpec::Text(text) => text.trim().to_string(),
    };
    format!(
        "`{written}` is too long: the maximum is {} ({} seconds)",
        format_duration(max),
        max.as_secs()
    )
}

/// Parses a duration string: `"10"` (seconds), `500ms`, `10s`, `5m`, `1h`, `1d`.
pub fn parse_duration_str(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if is_calendar(trimmed) {
        return Err(format!(
            "`{trimmed}`: calendar periods are only allowed as a quota `renewal_period`"
        ));
    }
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("invalid duration `{text}`: {DURATION_HINT}"));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: the number is too large"))?;
    let too_large = || format!("invalid duration `{text}`: too large");
    let duration = match unit.trim_start() {
        "ms" => Duration::from_millis(value),
        "" | "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(too_large)?),
        "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(too_large)?),
        "d" => Duration::from_secs(value.checked_mul(86_400).ok_or_else(too_large)?),
        _ => return Err(format!("invalid duration `{text}`: {DURATION_HINT}")),
    };
    Ok(duration)
}

fn is_calendar(text: &str) -> bool {
    matches!(text, "calendar-day" | "calendar-week" | "calendar-month")
}

/// Parses a renewal period of at most `max`. `allow_calendar` admits `calendar-day`,
/// `calendar-week` and `calendar-month` (quotas). A zero length is an error.
pub fn parse_period(
    spec: &DurationSpec,
    allow_calendar: bool,
    max: Duration,
) -> Result<Period, String> {
    if let DurationSpec::Text(text) = spec {
        let period = match text.trim() {
            "calendar-day" => Some(Period::CalendarDay),
            "calendar-week" => Some(Period::CalendarWeek),
            "calendar-month" => Some(Period::CalendarMonth),
            _ => None,
        };
        if let Some(period) = period {
            if !allow_calendar {
                return Err(format!(
                    "`{}`: calendar periods are only allowed for `quota` and `quota-by-key`",
                    text.trim()
                ));
            }
            return Ok(period);
        }
    }
    let duration = parse_duration_max(spec, max)?;
    if duration.is_zero() {
        return Err("the period must be greater than zero".to_string());
    }
    Ok(Period::Fixed(duration))
}

/// Parses a size in bytes.
pub fn parse_byte_size(size: &ByteSize) -> Result<u64, String> {
    match size {
        ByteSize::Bytes(bytes) => Ok(*bytes),
        ByteSize::Text(text) => parse_byte_size_str(text),
    }
}

/// Parses a size string: `512`, `64KiB`, `10MiB`, `1GiB`, `10KB`, `10MB`, `1GB`.
pub fn parse_byte_size_str(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let hint = "expected integer bytes or a number with a unit: `64KiB`, `10MiB`, `1GiB`, \
                `10KB`, `10MB`, `1GB`";
    if number.is_empty() {
        return Err(format!("invalid size `{text}`: {hint}"));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: the number is too large"))?;
    let factor: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("invalid size `{text}`: {hint}")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("invalid size `{text}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> DurationSpec {
        DurationSpec::Text(s.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration(&DurationSpec::Seconds(30)),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(parse_duration(&text("10")), Ok(Duration::from_secs(10)));
        assert_eq!(
            parse_duration(&text("500ms")),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(parse_duration(&text("10s")), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration(&text("5m")), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(&text("1h")), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(&text("1d")), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            parse_duration(&text("30d")),
            Ok(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(parse_duration(&text(" 2 s ")), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration(&text("0s")), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations() {
        for bad in ["", "s", "abc", "10x", "1.5s", "-1s", "10 seconds", "1w"] {
            let err = parse_duration(&text(bad)).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
        let err = parse_duration(&text("99999999999999999999s")).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_duration(&text("999999999999999999d")).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_duration(&text("calendar-day")).unwrap_err();
        assert!(err.contains("calendar periods"), "{err}");
        let err = parse_positive_duration(&DurationSpec::Seconds(0), ONE_DAY).unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
    }

    #[test]
    fn bounded_durations() {
        assert_eq!(
            parse_duration_max(&text("1d"), ONE_DAY),
            Ok(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_duration_max(&DurationSpec::Seconds(86_400), ONE_DAY),
            Ok(ONE_DAY)
        );
        assert_eq!(
            parse_positive_duration(&text("365d"), ONE_YEAR),
            Ok(ONE_YEAR)
        );
        let err = parse_duration_max(&text("21900d"), ONE_DAY).unwrap_err();
        assert_eq!(
            err,
            "`21900d` is too long: the maximum is 1d (86400 seconds)"
        );
        let err = parse_positive_duration(&DurationSpec::Seconds(u64::MAX), ONE_YEAR).unwrap_err();
        assert_eq!(
            err,
            "`18446744073709551615` is too long: the maximum is 365d (31536000 seconds)"
        );
        let err = parse_duration_max(&text("86400001ms"), ONE_DAY).unwrap_err();
        assert!(err.contains("too long"), "{err}");
        let err = parse_period(&text("366d"), true, ONE_YEAR).unwrap_err();
        assert!(err.contains("the maximum is 365d"), "{err}");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn periods() {
        assert_eq!(
            parse_period(&text("10s"), false, ONE_YEAR),
            Ok(Period::Fixed(Duration::from_secs(10)))
        );
        assert_eq!(
            parse_period(&text("calendar-day"), true, ONE_YEAR),
            Ok(Period::CalendarDay)
        );
        assert_eq!(
            parse_period(&text("calendar-week"), true, ONE_YEAR),
            Ok(Period::CalendarWeek)
        );
        assert_eq!(
            parse_period(&text("calendar-month"), true, ONE_YEAR),
            Ok(Period::CalendarMonth)
        );
        let err = parse_period(&text("calendar-month"), false, ONE_YEAR).unwrap_err();
        assert!(err.contains("only allowed for `quota`"), "{err}");
        let err = parse_period(&DurationSpec::Seconds(0), true, ONE_YEAR).unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
        let err = parse_period(&text("0ms"), true, ONE_YEAR).unwrap_err();
        assert!(err.contains("greater than zero"), "{err}");
        let err = parse_period(&text("calendar-year"), true, ONE_YEAR).unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn sizes() {
        let t = |s: &str| parse_byte_size(&ByteSize::Text(s.to_string()));
        assert_eq!(parse_byte_size(&ByteSize::Bytes(512)), Ok(512));
        assert_eq!(t("512"), Ok(512));
        assert_eq!(t("512B"), Ok(512));
        assert_eq!(t("64KiB"), Ok(64 * 1024));
        assert_eq!(t("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(t("1GiB"), Ok(1 << 30));
        assert_eq!(t("10KB"), Ok(10_000));
        assert_eq!(t("10MB"), Ok(10_000_000));
        assert_eq!(t("1GB"), Ok(1_000_000_000));
        assert_eq!(t("2 kib"), Ok(2048));
        for bad in ["", "MB", "1.5MB", "10XB", "-1"] {
            assert!(t(bad).unwrap_err().contains("invalid size"), "{bad}");
        }
        assert!(t("99999999999TiB").unwrap_err().contains("too large"));
    }
}
