//! Quota windows in a time zone (issue 13): calendar days, weeks (from Monday) and months, and
//! time-of-day schedules ("09:00–18:00 on weekdays: 1,000; otherwise the quota's limit"). The
//! filters carry no time-zone data: the control plane turns these into Unix times, the starts of
//! the current and next windows (`QuotaDoc::periods`) and the points where the limit changes
//! (`QuotaDoc::limits`), from the start of the current window or local day for a fixed span
//! ahead. What it pushes changes only when a window or a local day turns over, so that a
//! republish every few seconds does not churn Envoy's configuration; the publisher's periodic
//! refresh keeps it ahead of time.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;

/// A calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calendar {
    Day,
    Week,
    Month,
}

/// One entry of a schedule: on these days, from..to local time, this limit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// `mon` .. `sun`.
    pub days: Vec<String>,
    /// `HH:MM`, local time.
    pub from: String,
    /// `HH:MM`, later than `from` (`24:00` for the end of the day).
    pub to: String,
    pub limit: u64,
}

pub fn zone(name: Option<&str>) -> Result<Tz, String> {
    name.unwrap_or("UTC").parse::<Tz>().map_err(|_| format!("Unknown time zone '{}': use an IANA name, e.g. \"Europe/Paris\".", name.unwrap_or("")))
}

fn weekday(name: &str) -> Option<Weekday> {
    Some(match name {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// Minutes after midnight of `HH:MM` (`24:00` allowed).
fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

/// Checks a schedule: known days, times, `from < to`, no two entries overlapping on a day.
pub fn check_schedule(entries: &[ScheduleEntry]) -> Result<(), String> {
    let mut taken: Vec<(Weekday, u32, u32)> = Vec::new();
    for e in entries {
        let (Some(from), Some(to)) = (minutes(&e.from), minutes(&e.to)) else {
            return Err(format!("Schedule times are HH:MM ('{}', '{}').", e.from, e.to));
        };
        if from >= to {
            return Err(format!("A schedule entry ends after it starts ('{}' to '{}'); split one across midnight in two.", e.from, e.to));
        }
        if e.days.is_empty() {
            return Err("A schedule entry names at least one day (mon .. sun).".into());
        }
        for d in &e.days {
            let day = weekday(d).ok_or_else(|| format!("Unknown day '{d}': mon, tue, wed, thu, fri, sat or sun."))?;
            if taken.iter().any(|&(td, tf, tt)| td == day && from < tt && tf < to) {
                return Err(format!("Schedule entries overlap on {d}."));
            }
            taken.push((day, from, to));
        }
    }
    Ok(())
}

/// The Unix time of a local date and time in `tz` (the earliest, when a DST change repeats it;
/// the first valid minute after, when a DST change skips it).
fn local(tz: Tz, date: NaiveDate, minute: u32) -> i64 {
    let mut t = date.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(minute));
    for _ in 0..180 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp();
        }
        t += Duration::minutes(1);
    }
    t.and_utc().timestamp()
}

fn today(tz: Tz, now: i64) -> NaiveDate {
    tz.timestamp_opt(now, 0).single().map_or_else(|| chrono::DateTime::from_timestamp(now, 0).unwrap_or_default().date_naive(), |d| d.date_naive())
}

/// The starts of the current calendar window and of the next three, in `tz`.
pub fn periods(cal: Calendar, tz: Tz, now: i64) -> Vec<u64> {
    let date = today(tz, now);
    let first = match cal {
        Calendar::Day => date,
        Calendar::Week => date - Duration::days(i64::from(date.weekday().num_days_from_monday())),
        Calendar::Month => date.with_day(1).unwrap_or(date),
    };
    let step = |d: NaiveDate, n: u32| match cal {
        Calendar::Day => d + Duration::days(i64::from(n)),
        Calendar::Week => d + Duration::days(7 * i64::from(n)),
        Calendar::Month => d.checked_add_months(chrono::Months::new(n)).unwrap_or(d),
    };
    (0..4).map(|n| u64::try_from(local(tz, step(first, n), 0)).unwrap_or(0)).collect()
}

/// Where the limit changes, from the start of the local day of `now` for three days: at each
/// entry's start its limit, at its end `base` again (adjacent entries merged).
pub fn schedule_limits(entries: &[ScheduleEntry], base: u64, tz: Tz, now: i64) -> Vec<(u64, u64)> {
    let start = today(tz, now);
    let mut points: Vec<(i64, u64)> = vec![(local(tz, start, 0), base)];
    for offset in 0..3 {
        let date = start + Duration::days(offset);
        let mut spans: Vec<(u32, u32, u64)> = entries
            .iter()
            .filter(|e| e.days.iter().filter_map(|d| weekday(d)).any(|d| d == date.weekday()))
            .filter_map(|e| Some((minutes(&e.from)?, minutes(&e.to)?, e.limit)))
            .collect();
        spans.sort_unstable();
        for (from, to, limit) in spans {
            points.push((local(tz, date, from), limit));
            points.push((local(tz, date, to), base));
        }
        points.push((local(tz, date + Duration::days(1), 0), base));
    }
    points.sort_by_key(|p| p.0);
    // The last value at each instant wins (an entry starting where another ends), then runs of
    // the same limit are one.
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (t, limit) in points {
        let t = u64::try_from(t).unwrap_or(0);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = limit,
            _ => out.push((t, limit)),
        }
    }
    out.dedup_by(|b, a| a.1 == b.1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        tz.with_ymd_and_hms(y, m, d, h, min, 0).earliest().unwrap().timestamp()
    }

    #[test]
    fn months_start_at_local_midnight_across_dst() {
        let paris: Tz = zone(Some("Europe/Paris")).unwrap();
        // 2026-03-15 in Paris: this month from 1 March 00:00 CET; April from 1 April 00:00 CEST.
        let p = periods(Calendar::Month, paris, at(paris, 2026, 3, 15, 12, 0));
        assert_eq!(p[0], at(paris, 2026, 3, 1, 0, 0) as u64);
        assert_eq!(p[1], at(paris, 2026, 4, 1, 0, 0) as u64);
        assert_eq!(p[1] - p[0], (31 * 24 - 1) * 3600, "March in Paris is an hour short");
        // Late on the last day of the month in New York it is already the next month in UTC.
        let ny: Tz = zone(Some("America/New_York")).unwrap();
        let p = periods(Calendar::Month, ny, at(ny, 2026, 1, 31, 23, 30));
        assert_eq!(p[0], at(ny, 2026, 1, 1, 0, 0) as u64);
        assert_eq!(p[1], at(ny, 2026, 2, 1, 0, 0) as u64);
    }

    #[test]
    fn weeks_start_on_monday_and_days_at_midnight() {
        let utc: Tz = zone(None).unwrap();
        // 2026-12-05 is a Saturday.
        let p = periods(Calendar::Week, utc, at(utc, 2026, 12, 5, 10, 0));
        assert_eq!(p[0], at(utc, 2026, 11, 30, 0, 0) as u64);
        assert_eq!(p[1] - p[0], 7 * 86_400);
        let p = periods(Calendar::Day, utc, at(utc, 2026, 12, 5, 10, 0));
        assert_eq!(p[..2], [at(utc, 2026, 12, 5, 0, 0) as u64, at(utc, 2026, 12, 6, 0, 0) as u64]);
    }

    #[test]
    fn what_is_pushed_changes_only_when_a_day_or_window_turns() {
        let paris: Tz = zone(Some("Europe/Paris")).unwrap();
        let s = [ScheduleEntry { days: vec!["mon".into()], from: "09:00".into(), to: "18:00".into(), limit: 10 }];
        let morning = at(paris, 2026, 12, 7, 8, 0);
        assert_eq!(schedule_limits(&s, 1, paris, morning), schedule_limits(&s, 1, paris, morning + 3600 * 10));
        assert_eq!(periods(Calendar::Month, paris, morning), periods(Calendar::Month, paris, morning + 86_400));
    }

    #[test]
    fn business_hours_and_nights() {
        let paris: Tz = zone(Some("Europe/Paris")).unwrap();
        let s = [
            ScheduleEntry { days: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(), from: "09:00".into(), to: "18:00".into(), limit: 1000 },
            ScheduleEntry { days: vec!["sat".into()], from: "10:00".into(), to: "12:00".into(), limit: 50 },
        ];
        check_schedule(&s).unwrap();
        // Friday 2026-12-04, 07:00 local: 100 until 09:00, 1000 until 18:00, 100 until Saturday 10:00...
        let l = schedule_limits(&s, 100, paris, at(paris, 2026, 12, 4, 7, 0));
        assert_eq!(l[0], (at(paris, 2026, 12, 4, 0, 0) as u64, 100));
        assert_eq!(l[1], (at(paris, 2026, 12, 4, 9, 0) as u64, 1000));
        assert_eq!(l[2], (at(paris, 2026, 12, 4, 18, 0) as u64, 100));
        assert_eq!(l[3], (at(paris, 2026, 12, 5, 10, 0) as u64, 50));
        assert_eq!(l[4], (at(paris, 2026, 12, 5, 12, 0) as u64, 100));
        assert_eq!(l.len(), 5, "Sunday is all 100: {l:?}");
    }

    #[test]
    fn bad_schedules_are_refused_clearly() {
        let e = |days: &[&str], from: &str, to: &str| ScheduleEntry { days: days.iter().map(|d| d.to_string()).collect(), from: from.into(), to: to.into(), limit: 1 };
        assert!(check_schedule(&[e(&["mon"], "18:00", "09:00")]).unwrap_err().contains("midnight"));
        assert!(check_schedule(&[e(&["monday"], "09:00", "10:00")]).unwrap_err().contains("Unknown day"));
        assert!(check_schedule(&[e(&["mon"], "9:00", "10:00")]).unwrap_err().contains("HH:MM"));
        assert!(check_schedule(&[e(&["mon"], "09:00", "12:00"), e(&["mon"], "11:00", "13:00")]).unwrap_err().contains("overlap"));
        assert!(check_schedule(&[e(&["mon"], "09:00", "12:00"), e(&["mon"], "12:00", "24:00")]).is_ok());
        assert!(zone(Some("Mars/Olympus")).is_err());
    }
}
