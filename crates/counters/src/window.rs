//! Windows: the periods counters count in.
//!
//! Every counter counts in *fixed windows*: a fixed period `P` cuts time into
//! `[k·P, (k+1)·P)` counted from the Unix epoch (so every node and every restart agrees on
//! where a window starts, with no state); a calendar period is the calendar day, ISO week
//! (Monday to Monday) or month in an IANA time zone, its bounds computed in that zone (so a
//! day with a daylight-saving change is 23 or 25 hours long, and its end is still local
//! midnight). A window is identified by its start; it ends at its `end_ms`, which is what
//! `Retry-After` points at.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use std::sync::RwLock;
use std::time::Duration;

/// One window: `[start_ms, end_ms)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First millisecond of the window (its identity).
    pub start_ms: i64,
    /// First millisecond after the window.
    pub end_ms: i64,
}

impl Window {
    /// Whether `now_ms` falls in this window.
    pub fn contains(&self, now_ms: i64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }

    /// Whole seconds from `now_ms` to the end of the window, rounded up, at least 1: the
    /// `Retry-After` value. A request sent that many seconds later is in a later window.
    pub fn retry_after_secs(&self, now_ms: i64) -> u64 {
        let left = (self.end_ms - now_ms).max(0) as u64;
        left.div_ceil(1000).max(1)
    }
}

/// A counting period.
#[derive(Debug, Clone, PartialEq)]
pub enum Period {
    /// A fixed length in milliseconds (≥ 1), windows aligned to the Unix epoch.
    Fixed(i64),
    /// The calendar day in a time zone (local midnight to local midnight).
    Day(TimeZone),
    /// The ISO week in a time zone (Monday 00:00 to the next Monday 00:00).
    Week(TimeZone),
    /// The calendar month in a time zone (the 1st 00:00 to the next 1st 00:00).
    Month(TimeZone),
}

/// Why a period could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeriodError {
    /// The time zone name is not in the IANA database bundled with this build.
    UnknownTimeZone(String),
}

impl std::error::Error for PeriodError {}

impl std::fmt::Display for PeriodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeriodError::UnknownTimeZone(name) => {
                write!(
                    f,
                    "unknown time zone `{name}` (not in the IANA time zone database)"
                )
            }
        }
    }
}

impl Period {
    /// A fixed period (at least one millisecond).
    pub fn fixed(d: Duration) -> Period {
        Period::Fixed((d.as_millis().min(i64::MAX as u128) as i64).max(1))
    }

    /// A calendar period in the IANA time zone `tz` (`UTC`, `Europe/Berlin`...).
    pub fn calendar(kind: CalendarKind, tz: &str) -> Result<Period, PeriodError> {
        let zone = TimeZone::get(tz).map_err(|_| PeriodError::UnknownTimeZone(tz.to_owned()))?;
        Ok(match kind {
            CalendarKind::Day => Period::Day(zone),
            CalendarKind::Week => Period::Week(zone),
            CalendarKind::Month => Period::Month(zone),
        })
    }

    /// Whether this is a calendar period (computing its window costs a time zone lookup).
    pub fn is_calendar(&self) -> bool {
        !matches!(self, Period::Fixed(_))
    }

    /// The window containing `now_ms`.
    pub fn window_at(&self, now_ms: i64) -> Window {
        match self {
            Period::Fixed(p) => {
                let start = now_ms.div_euclid(*p) * p;
                Window {
                    start_ms: start,
                    end_ms: start.saturating_add(*p),
                }
            }
            Period::Day(tz) | Period::Week(tz) | Period::Month(tz) => {
                calendar_window(self, tz, now_ms).unwrap_or_else(|| {
                    // Out of jiff's range (years beyond ±9999): one day, UTC-aligned.
                    Period::Fixed(86_400_000).window_at(now_ms)
                })
            }
        }
    }

    /// A short human description (`10s`, `calendar-day (Europe/Berlin)`), for problem details.
    pub fn describe(&self) -> String {
        match self {
            Period::Fixed(ms) if ms % 1000 == 0 => format!("{}s", ms / 1000),
            Period::Fixed(ms) => format!("{ms}ms"),
            Period::Day(tz) => format!("calendar-day ({})", tz.iana_name().unwrap_or("UTC")),
            Period::Week(tz) => format!("calendar-week ({})", tz.iana_name().unwrap_or("UTC")),
            Period::Month(tz) => format!("calendar-month ({})", tz.iana_name().unwrap_or("UTC")),
        }
    }
}

/// The kinds of calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarKind {
    /// `calendar-day`.
    Day,
    /// `calendar-week` (ISO weeks, starting on Monday).
    Week,
    /// `calendar-month`.
    Month,
}

fn calendar_window(period: &Period, tz: &TimeZone, now_ms: i64) -> Option<Window> {
    let now = Timestamp::from_millisecond(now_ms).ok()?;
    let today = now.to_zoned(tz.clone()).date();
    let (start, end): (Date, Date) = match period {
        Period::Day(_) => (today, today.checked_add(1.day()).ok()?),
        Period::Week(_) => {
            let back = i64::from(today.weekday().to_monday_zero_offset());
            let monday = today.checked_sub(back.days()).ok()?;
            (monday, monday.checked_add(1.week()).ok()?)
        }
        Period::Month(_) => {
            let first = today.first_of_month();
            (first, first.checked_add(1.month()).ok()?)
        }
        Period::Fixed(_) => return None,
    };
    // Local midnight; where a DST gap swallows midnight, jiff picks the first instant after
    // it ("compatible" disambiguation), so the window is still gap-free and ordered.
    let start_ms = start
        .to_zoned(tz.clone())
        .ok()?
        .timestamp()
        .as_millisecond();
    let end_ms = end.to_zoned(tz.clone()).ok()?.timestamp().as_millisecond();
    Some(Window { start_ms, end_ms })
}

/// A period with the last window it computed, so calendar periods (a time zone
/// conversion each) are computed once per window, not once per request.
#[derive(Debug)]
pub struct CachedPeriod {
    period: Period,
    last: RwLock<Window>,
}

impl CachedPeriod {
    /// Wrap `period`.
    pub fn new(period: Period) -> CachedPeriod {
        CachedPeriod {
            period,
            last: RwLock::new(Window {
                start_ms: 0,
                end_ms: 0,
            }),
        }
    }

    /// The period.
    pub fn period(&self) -> &Period {
        &self.period
    }

    /// The window containing `now_ms`.
    pub fn window_at(&self, now_ms: i64) -> Window {
        if !self.period.is_calendar() {
            return self.period.window_at(now_ms);
        }
        let cached = *self.last.read().unwrap_or_else(|e| e.into_inner());
        if cached.contains(now_ms) {
            return cached;
        }
        let w = self.period.window_at(now_ms);
        *self.last.write().unwrap_or_else(|e| e.into_inner()) = w;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn fixed_windows_are_epoch_aligned_and_half_open() {
        let p = Period::fixed(Duration::from_secs(10));
        let w = p.window_at(ms("2026-03-01T10:00:07Z"));
        assert_eq!(w.start_ms, ms("2026-03-01T10:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-03-01T10:00:10Z"));
        // The last millisecond of a window, then the first of the next.
        assert_eq!(p.window_at(w.end_ms - 1), w);
        assert_eq!(p.window_at(w.end_ms).start_ms, w.end_ms);
        // Before the epoch too.
        let w = p.window_at(-1);
        assert_eq!((w.start_ms, w.end_ms), (-10_000, 0));
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let w = Window {
            start_ms: 0,
            end_ms: 10_000,
        };
        assert_eq!(w.retry_after_secs(0), 10);
        assert_eq!(w.retry_after_secs(1), 10);
        assert_eq!(w.retry_after_secs(9_000), 1);
        assert_eq!(w.retry_after_secs(9_001), 1);
        assert_eq!(w.retry_after_secs(9_999), 1);
        assert_eq!(w.retry_after_secs(10_000), 1);
        assert_eq!(w.retry_after_secs(8_999), 2);
        // Retry-After is true: now + retry_after lands at or after the end.
        for now in (0..10_000).step_by(37) {
            assert!(now + 1000 * w.retry_after_secs(now) as i64 >= w.end_ms);
            assert!(now + 1000 * (w.retry_after_secs(now) as i64 - 1) < w.end_ms);
        }
    }

    #[test]
    fn calendar_day_in_a_time_zone() {
        let p = Period::calendar(CalendarKind::Day, "Europe/Berlin").unwrap();
        // 23:30 UTC on 1 March is 00:30 on 2 March in Berlin (CET, +1).
        let w = p.window_at(ms("2026-03-01T23:30:00Z"));
        assert_eq!(w.start_ms, ms("2026-03-01T23:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-03-02T23:00:00Z"));
        let utc = Period::calendar(CalendarKind::Day, "UTC").unwrap();
        let w = utc.window_at(ms("2026-03-01T23:30:00Z"));
        assert_eq!(w.start_ms, ms("2026-03-01T00:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-03-02T00:00:00Z"));
    }

    #[test]
    fn calendar_days_across_daylight_saving_changes() {
        let p = Period::calendar(CalendarKind::Day, "Europe/Berlin").unwrap();
        // 29 March 2026: clocks jump from 02:00 to 03:00, the day has 23 hours.
        let w = p.window_at(ms("2026-03-29T12:00:00Z"));
        assert_eq!(w.start_ms, ms("2026-03-28T23:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-03-29T22:00:00Z"));
        assert_eq!(w.end_ms - w.start_ms, 23 * 3_600_000);
        // 25 October 2026: back from 03:00 to 02:00, 25 hours.
        let w = p.window_at(ms("2026-10-25T12:00:00Z"));
        assert_eq!(w.start_ms, ms("2026-10-24T22:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-10-25T23:00:00Z"));
        assert_eq!(w.end_ms - w.start_ms, 25 * 3_600_000);
        // A zone whose DST gap swallowed midnight (Santiago, 2022-09-11 00:00 -> 01:00):
        // the day starts at the first instant that exists.
        let p = Period::calendar(CalendarKind::Day, "America/Santiago").unwrap();
        let w = p.window_at(ms("2022-09-11T12:00:00Z"));
        assert_eq!(w.start_ms, ms("2022-09-11T04:00:00Z"));
        assert_eq!(w.end_ms, ms("2022-09-12T03:00:00Z"));
    }

    #[test]
    fn calendar_week_starts_on_monday() {
        let p = Period::calendar(CalendarKind::Week, "UTC").unwrap();
        // 2026-03-04 is a Wednesday.
        let w = p.window_at(ms("2026-03-04T08:00:00Z"));
        assert_eq!(w.start_ms, ms("2026-03-02T00:00:00Z"));
        assert_eq!(w.end_ms, ms("2026-03-09T00:00:00Z"));
        // Monday 00:00 itself starts a week; Sunday 23:59:59.999 ends one.
        assert_eq!(p.window_at(ms("2026-03-09T00:00:00Z")).start_ms, w.end_ms);
        assert_eq!(p.window_at(w.end_ms - 1), w);
        let tokyo = Period::calendar(CalendarKind::Week, "Asia/Tokyo").unwrap();
        // Sunday 20:00 UTC is already Monday 05:00 in Tokyo.
        let w = tokyo.window_at(ms("2026-03-08T20:00:00Z"));
        assert_eq!(w.start_ms, ms("2026-03-08T15:00:00Z"));
    }

    #[test]
    fn calendar_month_lengths() {
        let p = Period::calendar(CalendarKind::Month, "America/New_York").unwrap();
        let w = p.window_at(ms("2026-02-15T12:00:00Z"));
        assert_eq!(w.start_ms, ms("2026-02-01T05:00:00Z"));
        // March 1st, still EST (DST starts on 8 March).
        assert_eq!(w.end_ms, ms("2026-03-01T05:00:00Z"));
        let w = p.window_at(ms("2026-03-20T12:00:00Z"));
        // April 1st in EDT (-4).
        assert_eq!(w.end_ms, ms("2026-04-01T04:00:00Z"));
        let utc = Period::calendar(CalendarKind::Month, "UTC").unwrap();
        let w = utc.window_at(ms("2024-02-29T23:59:59.999Z"));
        assert_eq!(w.end_ms, ms("2024-03-01T00:00:00Z"));
        let w = utc.window_at(ms("2026-12-31T12:00:00Z"));
        assert_eq!(w.end_ms, ms("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn unknown_time_zones_are_refused() {
        assert_eq!(
            Period::calendar(CalendarKind::Day, "Mars/Olympus_Mons"),
            Err(PeriodError::UnknownTimeZone("Mars/Olympus_Mons".into()))
        );
    }

    #[test]
    fn the_cache_follows_the_clock() {
        let c = CachedPeriod::new(Period::calendar(CalendarKind::Day, "UTC").unwrap());
        let a = c.window_at(ms("2026-03-01T10:00:00Z"));
        assert_eq!(c.window_at(ms("2026-03-01T23:59:59Z")), a);
        let b = c.window_at(ms("2026-03-02T00:00:00Z"));
        assert_eq!(b.start_ms, a.end_ms);
        // Going back in time (a clock step) recomputes too.
        assert_eq!(c.window_at(ms("2026-03-01T10:00:00Z")), a);
    }
}
