//! The geography of the program: US states and territories with their 2010 populations and
//! county-equivalent counts (the program activated county by county: 3,181 jurisdictions, seed
//! 001 — [`jurisdiction_counts`] scales the census counts to that total), and ICE's 24
//! Enforcement and Removal Operations field offices with their areas of responsibility.
//!
//! County numbers are odd, as FIPS county codes are (001, 003, ...), so the few split states
//! can be divided by real county codes where it matters: the Los Angeles and San Diego
//! offices take their real counties out of California, the New York City office its five
//! boroughs and neighbouring counties, and Texas is split among four offices (Harris, Dallas,
//! Bexar and El Paso counties to their own office; the rest by a fixed rule on the county
//! number — documented in [`field_office`]).

/// (postal code, name, 2010 population in thousands, county-equivalents).
pub const STATES: &[(&str, &str, u64, u32)] = &[
    ("AL", "Alabama", 4780, 67),
    ("AK", "Alaska", 710, 29),
    ("AZ", "Arizona", 6392, 15),
    ("AR", "Arkansas", 2916, 75),
    ("CA", "California", 37254, 58),
    ("CO", "Colorado", 5029, 64),
    ("CT", "Connecticut", 3574, 8),
    ("DE", "Delaware", 898, 3),
    ("DC", "District of Columbia", 602, 1),
    ("FL", "Florida", 18801, 67),
    ("GA", "Georgia", 9688, 159),
    ("HI", "Hawaii", 1360, 5),
    ("ID", "Idaho", 1568, 44),
    ("IL", "Illinois", 12831, 102),
    ("IN", "Indiana", 6484, 92),
    ("IA", "Iowa", 3046, 99),
    ("KS", "Kansas", 2853, 105),
    ("KY", "Kentucky", 4339, 120),
    ("LA", "Louisiana", 4533, 64),
    ("ME", "Maine", 1328, 16),
    ("MD", "Maryland", 5774, 24),
    ("MA", "Massachusetts", 6548, 14),
    ("MI", "Michigan", 9884, 83),
    ("MN", "Minnesota", 5304, 87),
    ("MS", "Mississippi", 2967, 82),
    ("MO", "Missouri", 5989, 115),
    ("MT", "Montana", 989, 56),
    ("NE", "Nebraska", 1826, 93),
    ("NV", "Nevada", 2701, 17),
    ("NH", "New Hampshire", 1316, 10),
    ("NJ", "New Jersey", 8792, 21),
    ("NM", "New Mexico", 2059, 33),
    ("NY", "New York", 19378, 62),
    ("NC", "North Carolina", 9535, 100),
    ("ND", "North Dakota", 673, 53),
    ("OH", "Ohio", 11537, 88),
    ("OK", "Oklahoma", 3751, 77),
    ("OR", "Oregon", 3831, 36),
    ("PA", "Pennsylvania", 12702, 67),
    ("RI", "Rhode Island", 1053, 5),
    ("SC", "South Carolina", 4625, 46),
    ("SD", "South Dakota", 814, 66),
    ("TN", "Tennessee", 6346, 95),
    ("TX", "Texas", 25146, 254),
    ("UT", "Utah", 2764, 29),
    ("VT", "Vermont", 626, 14),
    ("VA", "Virginia", 8001, 134),
    ("WA", "Washington", 6725, 39),
    ("WV", "West Virginia", 1853, 55),
    ("WI", "Wisconsin", 5687, 72),
    ("WY", "Wyoming", 564, 23),
    ("PR", "Puerto Rico", 3726, 78),
    ("GU", "Guam", 159, 1),
    ("VI", "U.S. Virgin Islands", 106, 3),
    ("MP", "Northern Mariana Islands", 54, 4),
];

/// The number of jurisdictions the documents give: `001`, "providing information to each of
/// the 3,181 jurisdictions".
pub const JURISDICTIONS: u32 = 3_181;

/// Each state's number of jurisdictions, in [`STATES`] order, summing to exactly
/// [`JURISDICTIONS`].
///
/// **Assumption**: the census county-equivalents of [`STATES`] sum to 3,229, and the documents
/// do not say how their 3,181 divide among the states (some county-equivalents have no jail
/// of their own, or share one). So every state's census count is scaled by 3,181 / 3,229
/// (largest remainders, ties to the earlier state, at least one each): a state keeps about
/// 98.5% of its counties, numbered 001, 003, ... as before.
pub fn jurisdiction_counts() -> Vec<u32> {
    let census: u64 = STATES.iter().map(|s| s.3 as u64).sum();
    let target = JURISDICTIONS as u64;
    // Quotas in units of 1/census: state i is owed counties_i * target / census.
    let owed: Vec<u64> = STATES.iter().map(|s| s.3 as u64 * target).collect();
    let mut counts: Vec<u64> = owed.iter().map(|q| (q / census).max(1)).collect();
    let mut order: Vec<usize> = (0..STATES.len()).collect();
    // Largest remainder first; a state already raised to one has no remainder left.
    order.sort_by_key(|&i| {
        let rem = owed[i].saturating_sub(counts[i] * census);
        (std::cmp::Reverse(rem), i)
    });
    let short = target - counts.iter().sum::<u64>();
    for &i in order.iter().take(short as usize) {
        counts[i] += 1;
    }
    counts.into_iter().map(|c| c as u32).collect()
}

/// States that ended their Secure Communities agreements in 2011 (their jurisdictions do not
/// receive results; the field offices still do).
pub const DECLINING_STATES: &[&str] = &["IL", "NY", "MA"];

/// States and territories without electronic receipt of immigration responses.
pub const NOT_ELECTRONIC: &[&str] = &["GU", "VI", "MP", "WY"];

/// ICE ERO field offices: (code, name, states wholly in its area).
pub const FIELD_OFFICES: &[(&str, &str, &[&str])] = &[
    ("ATL", "Atlanta", &["GA", "NC", "SC"]),
    ("BAL", "Baltimore", &["MD"]),
    ("BOS", "Boston", &["CT", "MA", "ME", "NH", "RI", "VT"]),
    ("BUF", "Buffalo", &[]),
    ("CHI", "Chicago", &["IL", "IN", "KS", "KY", "MO", "WI"]),
    ("DAL", "Dallas", &["OK"]),
    ("DEN", "Denver", &["CO", "WY"]),
    ("DET", "Detroit", &["MI", "OH"]),
    ("ELP", "El Paso", &["NM"]),
    ("HOU", "Houston", &[]),
    ("LOS", "Los Angeles", &[]),
    ("MIA", "Miami", &["FL", "PR", "VI"]),
    ("NEW", "Newark", &["NJ"]),
    ("NOL", "New Orleans", &["AL", "AR", "LA", "MS", "TN"]),
    ("NYC", "New York City", &[]),
    ("PHI", "Philadelphia", &["DE", "PA", "WV"]),
    ("PHO", "Phoenix", &["AZ"]),
    ("SLC", "Salt Lake City", &["ID", "MT", "NV", "UT"]),
    ("SNA", "San Antonio", &[]),
    ("SND", "San Diego", &[]),
    ("SFR", "San Francisco", &["HI", "GU", "MP"]),
    ("SEA", "Seattle", &["AK", "OR", "WA"]),
    ("SPM", "St. Paul", &["IA", "MN", "ND", "NE", "SD"]),
    ("WAS", "Washington", &["DC", "VA"]),
];

/// Los Angeles office: Los Angeles, Orange, Riverside, San Bernardino, Ventura, Santa
/// Barbara and San Luis Obispo counties.
const LOS_COUNTIES: &[u32] = &[37, 59, 65, 71, 111, 83, 79];
/// San Diego office: San Diego and Imperial counties.
const SND_COUNTIES: &[u32] = &[73, 25];
/// New York City office: the five boroughs and the downstate counties.
const NYC_COUNTIES: &[u32] = &[5, 47, 61, 81, 85, 59, 103, 119, 87, 79, 71, 27, 111, 105];

/// The field office covering county `fips` of `state`.
///
/// Texas: Harris (201) → Houston, Dallas (113) → Dallas, Bexar (029) → San Antonio, El Paso
/// (141) → El Paso; other counties by their index `i = (fips - 1) / 2`: `i % 6` of 0–1 →
/// Dallas, 2–3 → Houston, 4 → San Antonio, 5 → El Paso.
pub fn field_office(state: &str, fips: u32) -> &'static str {
    match state {
        "CA" if LOS_COUNTIES.contains(&fips) => "LOS",
        "CA" if SND_COUNTIES.contains(&fips) => "SND",
        "CA" => "SFR",
        "NY" if NYC_COUNTIES.contains(&fips) => "NYC",
        "NY" => "BUF",
        "TX" => match fips {
            201 => "HOU",
            113 => "DAL",
            29 => "SNA",
            141 => "ELP",
            _ => match ((fips - 1) / 2) % 6 {
                0 | 1 => "DAL",
                2 | 3 => "HOU",
                4 => "SNA",
                _ => "ELP",
            },
        },
        _ => FIELD_OFFICES
            .iter()
            .find(|(_, _, states)| states.contains(&state))
            .map(|(code, _, _)| *code)
            .unwrap_or_else(|| panic!("no field office covers {state}")),
    }
}

/// States along the southwest border, activated first.
pub const BORDER_STATES: &[&str] = &["TX", "AZ", "NM", "CA"];

pub const FIRST_NAMES: &[&str] = &[
    "Alex", "Maria", "James", "Ana", "John", "Rosa", "Michael", "Linda", "Jose", "Mary", "David",
    "Carmen", "Robert", "Patricia", "Luis", "Jennifer", "Carlos", "Elena", "William", "Sofia",
    "Daniel", "Laura", "Juan", "Karen", "Thomas", "Lucia", "Kevin", "Nancy", "Miguel", "Grace",
];

pub const LAST_NAMES: &[&str] = &[
    "Smith",
    "Garcia",
    "Johnson",
    "Martinez",
    "Williams",
    "Rodriguez",
    "Brown",
    "Hernandez",
    "Jones",
    "Lopez",
    "Miller",
    "Gonzalez",
    "Davis",
    "Perez",
    "Wilson",
    "Sanchez",
    "Anderson",
    "Ramirez",
    "Taylor",
    "Torres",
    "Thomas",
    "Flores",
    "Moore",
    "Rivera",
    "Jackson",
    "Nguyen",
    "White",
    "Kim",
    "Harris",
    "Patel",
];

pub const PLACES_OF_BIRTH: &[&str] = &[
    "Texas",
    "California",
    "New York",
    "Florida",
    "Illinois",
    "Mexico",
    "Guatemala",
    "Honduras",
    "El Salvador",
    "Philippines",
    "India",
    "China",
    "Vietnam",
    "Canada",
    "Dominican Republic",
    "Cuba",
    "Colombia",
    "Jamaica",
    "Haiti",
    "Nigeria",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jurisdiction_total_is_the_documents_3181() {
        let counts = jurisdiction_counts();
        assert_eq!(counts.len(), STATES.len());
        assert_eq!(counts.iter().sum::<u32>(), 3_181);
        for (n, (code, _, _, census)) in counts.iter().zip(STATES) {
            // Scaling by 3,181 / 3,229 moves no state by more than one county and two
            // percent (plus the one it may be rounded up by), and leaves none empty.
            assert!(*n >= 1 && n <= census, "{code}: {n} of {census}");
            assert!(
                (*census as f64 * 0.98 - 1.0) <= *n as f64,
                "{code}: {n} of {census}"
            );
        }
        // The counties the field offices are split by remain: county 2k+1 is the state's
        // (k+1)th (Harris TX201 the 101st; California's highest named is 113, New York's 119).
        let count = |st: &str| counts[STATES.iter().position(|s| s.0 == st).unwrap()];
        assert!(count("TX") >= 101);
        assert!(count("CA") >= 57);
        assert!(count("NY") >= 60);
    }
}
