//! Detainer hold times: a detainer asks the jail to hold a person no more than **48 hours,
//! excluding Saturdays, Sundays and federal holidays**, beyond their scheduled release
//! (8 C.F.R. 287.7(d); DESIGN.md §2).
//!
//! Federal holidays are computed by rule for any year (5 U.S.C. 6103), never from a date
//! list: fixed-date holidays shift to the Friday before when they fall on a Saturday and to
//! the Monday after on a Sunday (so New Year's Day on a Saturday is observed on the previous
//! 31 December), and each holiday exists only from its first year, with the Uniform Monday
//! Holiday Act's moves from 1971:
//!
//! | holiday | rule |
//! |---|---|
//! | New Year's Day | 1 January |
//! | Birthday of Martin Luther King, Jr. | third Monday of January, from 1986 |
//! | Washington's Birthday | 22 February; third Monday of February from 1971 |
//! | Memorial Day | 30 May (from 1888); last Monday of May from 1971 |
//! | Juneteenth | 19 June, from 2021 |
//! | Independence Day | 4 July |
//! | Labor Day | first Monday of September, from 1894 |
//! | Columbus Day | 12 October (from 1937); second Monday of October from 1971 |
//! | Veterans Day | 11 November (from 1938); fourth Monday of October 1971–1977 |
//! | Thanksgiving Day | last Thursday of November; fourth Thursday from 1942 |
//! | Christmas Day | 25 December |
//!
//! Times are the jail's local civil time: the hold runs on the jail's calendar.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Weekday};

/// How long a detainer may hold a person beyond release, counted on business days only.
pub const HOLD_HOURS: i64 = 48;

/// The detainer form's revision: revised, in effect December 2011 (DESIGN §2; seed 000: "ICE
/// has revised the detainer form").
pub const FORM_REVISION: &str = "2011-12";
/// Seed 001: the form "provides instructions, in six languages".
pub const COMPLAINT_INSTRUCTION_LANGUAGES: u32 = 6;
/// Seed 001: "contact the ICE Joint Intake Center at 1-877-2INTAKE (877-246-8253)". The same
/// document prints it once more as "1-877-2-INTAKE (1-877-246-8263)"; 2INTAKE spells 246-8253,
/// so that is the number given.
pub const JOINT_INTAKE_CENTER: &str = "1-877-2INTAKE (877-246-8253)";
/// Seed 001: "That hotline is (855) 448-6903", answered by the LESC, for people who believe they
/// were identified as crime victims or who are U.S. citizens.
pub const LESC_HOTLINE: &str = "(855) 448-6903";

/// What the detainer form tells the jail and the person (seeds 000, 001: a copy to the person;
/// the 48-hour hold, weekends and holidays excluded, to interview; complaint instructions in
/// six languages; the Joint Intake Center and the LESC hotline; the jail asked to notify the
/// LESC of a possible victim or a witness).
pub fn notice() -> interop_proto::v1::DetainerNotice {
    interop_proto::v1::DetainerNotice {
        form_revision: FORM_REVISION.into(),
        copy_to_person: true,
        hold_hours: HOLD_HOURS as u32,
        weekends_and_holidays_excluded: true,
        purpose: "to allow ICE to interview the person".into(),
        complaint_instruction_languages: COMPLAINT_INSTRUCTION_LANGUAGES,
        joint_intake_center: JOINT_INTAKE_CENTER.into(),
        lesc_hotline: LESC_HOTLINE.into(),
        notify_lesc_if_victim_or_witness: true,
    }
}

fn nth(year: i32, month: u32, wd: Weekday, n: u8) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, wd, n).expect("valid nth weekday")
}

fn last(year: i32, month: u32, wd: Weekday) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, wd, 5)
        .unwrap_or_else(|| nth(year, month, wd, 4))
}

fn ymd(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("valid date")
}

/// A fixed-date holiday on a weekend is observed on the nearest weekday.
fn observed(d: NaiveDate) -> NaiveDate {
    match d.weekday() {
        Weekday::Sat => d - Duration::days(1),
        Weekday::Sun => d + Duration::days(1),
        _ => d,
    }
}

/// The federal holidays of `year`, as observed, with their names. (An observed date can fall
/// in the previous year: New Year's Day on a Saturday.)
pub fn federal_holidays(year: i32) -> Vec<(NaiveDate, &'static str)> {
    use Weekday::*;
    let mut h = vec![(observed(ymd(year, 1, 1)), "New Year's Day")];
    if year >= 1986 {
        h.push((nth(year, 1, Mon, 3), "Birthday of Martin Luther King, Jr."));
    }
    h.push((
        if year >= 1971 {
            nth(year, 2, Mon, 3)
        } else {
            observed(ymd(year, 2, 22))
        },
        "Washington's Birthday",
    ));
    if year >= 1888 {
        h.push((
            if year >= 1971 {
                last(year, 5, Mon)
            } else {
                observed(ymd(year, 5, 30))
            },
            "Memorial Day",
        ));
    }
    if year >= 2021 {
        h.push((
            observed(ymd(year, 6, 19)),
            "Juneteenth National Independence Day",
        ));
    }
    h.push((observed(ymd(year, 7, 4)), "Independence Day"));
    if year >= 1894 {
        h.push((nth(year, 9, Mon, 1), "Labor Day"));
    }
    if year >= 1937 {
        h.push((
            if year >= 1971 {
                nth(year, 10, Mon, 2)
            } else {
                observed(ymd(year, 10, 12))
            },
            "Columbus Day",
        ));
    }
    if year >= 1938 {
        h.push((
            if (1971..=1977).contains(&year) {
                nth(year, 10, Mon, 4)
            } else {
                observed(ymd(year, 11, 11))
            },
            "Veterans Day",
        ));
    }
    h.push((
        if year >= 1942 {
            nth(year, 11, Thu, 4)
        } else {
            last(year, 11, Thu)
        },
        "Thanksgiving Day",
    ));
    h.push((observed(ymd(year, 12, 25)), "Christmas Day"));
    h.sort();
    h
}

/// Whether `d` is a federal holiday (as observed).
pub fn is_federal_holiday(d: NaiveDate) -> bool {
    // Next year's New Year's Day can be observed on 31 December.
    [d.year(), d.year() + 1]
        .iter()
        .any(|y| federal_holidays(*y).iter().any(|(h, _)| *h == d))
}

/// A day on which detainer hours count.
pub fn is_business_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !is_federal_holiday(d)
}

/// The latest time a detainer may hold a person scheduled for release at `release`.
pub fn hold_until(release: NaiveDateTime) -> NaiveDateTime {
    let mut remaining = Duration::hours(HOLD_HOURS);
    let mut t = release;
    loop {
        let next_midnight = (t.date() + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight");
        if is_business_day(t.date()) {
            let available = next_midnight - t;
            if available >= remaining {
                return t + remaining;
            }
            remaining -= available;
        }
        t = next_midnight;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }
    fn dt(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn holidays_by_rule_hand_checked() {
        let dates = |y| {
            federal_holidays(y)
                .into_iter()
                .map(|(d, _)| d.to_string())
                .collect::<Vec<_>>()
        };
        // 2011: the year the program's statistics are drawn from.
        assert_eq!(
            dates(2011),
            [
                "2010-12-31", // New Year's Day 2011 fell on a Saturday
                "2011-01-17",
                "2011-02-21",
                "2011-05-30",
                "2011-07-04",
                "2011-09-05",
                "2011-10-10",
                "2011-11-11",
                "2011-11-24",
                "2011-12-26", // Christmas on a Sunday
            ]
        );
        // 2021: Juneteenth's first year, observed Friday 18 June (19 June was a Saturday).
        assert!(dates(2021).contains(&"2021-06-18".to_string()));
        assert!(!dates(2020).iter().any(|d| d.starts_with("2020-06-1")));
        // MLK Day did not exist before 1986.
        assert_eq!(federal_holidays(1985).len(), 9);
        assert!(dates(1986).contains(&"1986-01-20".to_string()));
        // Veterans Day on the fourth Monday of October 1971–1977, back on 11 November from 1978.
        assert!(dates(1975).contains(&"1975-10-27".to_string()));
        assert!(dates(1978).contains(&"1978-11-10".to_string())); // 11 Nov 1978 was a Saturday
        // Before 1971: fixed dates (Memorial Day 30 May 1970 was a Saturday → Friday 29 May).
        assert!(dates(1970).contains(&"1970-05-29".to_string()));
        assert!(dates(1970).contains(&"1970-02-23".to_string())); // 22 Feb 1970 was a Sunday
        // Thanksgiving: last Thursday before 1942 (1939 had five Thursdays), fourth after.
        assert!(dates(1939).contains(&"1939-11-30".to_string()));
        assert!(dates(2012).contains(&"2012-11-22".to_string()));
    }

    #[test]
    fn new_years_observed_on_the_last_day_of_the_previous_year() {
        assert!(is_federal_holiday(d("2010-12-31")));
        assert!(is_federal_holiday(d("2021-12-31"))); // 1 Jan 2022 was a Saturday
        assert!(!is_federal_holiday(d("2011-12-30")));
        assert!(!is_business_day(d("2011-12-31")));
    }

    #[test]
    fn hold_times_skip_weekends_and_holidays() {
        let cases = [
            // Tuesday noon → Thursday noon.
            ("2011-06-07 12:00", "2011-06-09 12:00"),
            // Friday 17:00 → 7 h Friday, skip the weekend, 24 h Monday, 17 h Tuesday.
            ("2011-06-10 17:00", "2011-06-14 17:00"),
            // Saturday release: nothing counts until Monday 00:00 → end of Tuesday.
            ("2011-06-11 10:00", "2011-06-15 00:00"),
            // Friday before Memorial Day 2011 (Mon 30 May): Monday is skipped too.
            ("2011-05-27 09:00", "2011-06-01 09:00"),
            // Thursday before Labor Day 2011 (Mon 5 Sep).
            ("2011-09-01 08:30", "2011-09-06 08:30"),
            // Across the year boundary: Thu 29 Dec 2011 (12 h), Fri 30 Dec (24 h), the weekend,
            // Mon 2 Jan 2012 skipped (New Year's Day fell on a Sunday, observed Monday), Tue.
            ("2011-12-29 12:00", "2012-01-03 12:00"),
            // Christmas week 2011: Fri 23 Dec release; Mon 26 Dec observed Christmas.
            ("2011-12-23 20:00", "2011-12-28 20:00"),
            // Wednesday before Thanksgiving 2011 (Thu 24 Nov).
            ("2011-11-23 15:00", "2011-11-28 15:00"),
        ];
        for (release, want) in cases {
            assert_eq!(hold_until(dt(release)), dt(want), "release {release}");
        }
    }

    #[test]
    fn hold_time_is_exactly_48_business_hours_for_any_release() {
        // Property: the business hours between release and hold-until are exactly 48.
        let mut t = dt("2011-01-01 00:00");
        for _ in 0..2000 {
            let end = hold_until(t);
            let mut counted = Duration::zero();
            let mut cur = t;
            while cur < end {
                let next = ((cur.date() + Duration::days(1))
                    .and_hms_opt(0, 0, 0)
                    .unwrap())
                .min(end);
                if is_business_day(cur.date()) {
                    counted += next - cur;
                }
                cur = next;
            }
            assert_eq!(counted, Duration::hours(HOLD_HOURS), "release {t}");
            t += Duration::minutes(263);
        }
    }
}
