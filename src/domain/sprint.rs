//! The sprint calendar: a fixed cadence from a start date.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// Maps instants to sprint indices. Sprint 0 starts at `start` (midnight UTC); sprints before
/// it have negative indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SprintCalendar {
    start: DateTime<Utc>,
    length_days: u32,
}

impl SprintCalendar {
    pub fn new(start: NaiveDate, length_days: u32) -> Self {
        let start = Utc.from_utc_datetime(&start.and_time(chrono::NaiveTime::MIN));
        SprintCalendar {
            start,
            length_days: length_days.max(1),
        }
    }

    pub fn length_secs(&self) -> i64 {
        i64::from(self.length_days) * 86_400
    }

    pub fn length_days(&self) -> u32 {
        self.length_days
    }

    /// The sprint an instant falls in.
    pub fn index_of(&self, at: DateTime<Utc>) -> i64 {
        (at.timestamp() - self.start.timestamp()).div_euclid(self.length_secs())
    }

    /// When sprint `index` starts.
    pub fn start_of(&self, index: i64) -> DateTime<Utc> {
        self.start + Duration::seconds(index * self.length_secs())
    }

    /// When sprint `index` ends (the next one's start).
    pub fn end_of(&self, index: i64) -> DateTime<Utc> {
        self.start_of(index + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_before_and_after_start() {
        let cal = SprintCalendar::new(NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(), 14);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(cal.index_of(at("2026-01-05T00:00:00Z")), 0);
        assert_eq!(cal.index_of(at("2026-01-18T23:59:59Z")), 0);
        assert_eq!(cal.index_of(at("2026-01-19T00:00:00Z")), 1);
        assert_eq!(cal.index_of(at("2026-01-04T23:59:59Z")), -1);
        assert_eq!(cal.start_of(1), at("2026-01-19T00:00:00Z"));
    }
}
