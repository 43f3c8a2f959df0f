//! The matcher as a user sees it: searches find mates and refuse strangers, whatever the
//! sharding and the deadline, and decide as pairing every enrolled subject would. (Each stage's
//! own properties are tested beside its code.)

use super::pairing::compare;
use super::probe::ProbeCodes;
use super::reference::{enrol_capture, probe};
use super::{IndexedMatcher, THRESHOLD, top_k};
use crate::{Candidate, MatchError, Matcher, SubjectId, Tenprint};
use proptest::prelude::*;
use std::time::Instant;

#[test]
fn identifies_mated_probes_and_rejects_strangers() {
    let m = IndexedMatcher::new(3);
    for p in 1..=600 {
        m.enroll(p, &enrol_capture(p)).unwrap();
    }
    assert_eq!(m.len(), 600);
    for i in 0..60 {
        let p = 1 + (i * 37) % 600;
        let r = m.search(&probe(p, i), 3).unwrap();
        assert_eq!(
            r.hit.map(|c| c.subject),
            Some(p),
            "mated search {p} missed: {:?}",
            r.candidates
        );
        let stranger = m.search(&probe(10_000 + i, 0), 3).unwrap();
        assert_eq!(stranger.hit, None, "false hit: {:?}", stranger.candidates);
    }
}

#[test]
fn partial_probes_still_identify() {
    let m = IndexedMatcher::new(2);
    for p in 1..=200 {
        m.enroll(p, &enrol_capture(p)).unwrap();
    }
    // Only four fingers captured (e.g. a damaged card).
    let mut t = probe(42, 1);
    t.fingers.truncate(4);
    assert_eq!(m.search(&t, 1).unwrap().hit.map(|c| c.subject), Some(42));
}

/// A search whose deadline passes gives up with `DeadlineExceeded` — whenever it passes,
/// from before the search starts to midway — and otherwise answers exactly as without a
/// deadline: never a partial answer, never a "no hit" for want of time.
#[test]
fn a_search_past_its_deadline_gives_up_and_decides_nothing() {
    use std::time::Duration;
    let m = IndexedMatcher::new(3);
    let prints: Vec<(SubjectId, Tenprint)> = (1..=2000).map(|p| (p, enrol_capture(p))).collect();
    m.enroll_many(&prints).unwrap();
    let q = probe(5, 1);
    let want = m.search(&q, 3).unwrap();
    assert_eq!(want.hit.map(|c| c.subject), Some(5));
    let (mut gave_up, mut answered) = (0, 0);
    for micros in [
        0u64, 20, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 60_000_000,
    ] {
        let deadline = Instant::now() + Duration::from_micros(micros);
        match m.search_before(&q, 3, Some(deadline)) {
            Err(MatchError::DeadlineExceeded) => gave_up += 1,
            Ok(r) => {
                assert_eq!(r, want, "with {micros} µs");
                answered += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        gave_up >= 1 && answered >= 1,
        "{gave_up} gave up, {answered} answered"
    );
    assert_eq!(
        m.search_before(&q, 3, Some(Instant::now())),
        Err(MatchError::DeadlineExceeded)
    );
    assert_eq!(m.search_before(&q, 3, None).unwrap(), want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]
    /// The sharded search ranks exactly as a single-shard scan of the same gallery.
    #[test]
    fn sharding_does_not_change_the_answer(shards in 2usize..6, people in 20u64..80, who in 0u64..100) {
        let one = IndexedMatcher::new(1);
        let many = IndexedMatcher::new(shards);
        for p in 1..=people {
            one.enroll(p, &enrol_capture(p)).unwrap();
            many.enroll(p, &enrol_capture(p)).unwrap();
        }
        let q = probe(1 + who % people, who);
        prop_assert_eq!(one.search(&q, 5).unwrap(), many.search(&q, 5).unwrap());
    }

    /// The two-stage search decides as pairing every enrolled subject would: the same
    /// hit (or none), mated probe or stranger, whatever the shard count. A shortlist that
    /// lost the mate, or a fused score that ranked it out, fails this.
    #[test]
    fn the_shortlist_decides_as_the_exhaustive_scan(shards in 1usize..5, people in 20u64..120, who in 0u64..200, stranger in proptest::bool::ANY) {
        let m = IndexedMatcher::new(shards);
        for p in 1..=people {
            m.enroll(p, &enrol_capture(p)).unwrap();
        }
        let q = if stranger { probe(10_000 + who, 1) } else { probe(1 + who % people, who) };
        let codes = ProbeCodes::new(&q).unwrap();
        let mut best: Option<Candidate> = None;
        for shard in &m.shards {
            let shard = shard.read().unwrap();
            for e in 0..shard.len() {
                let score: f32 = codes
                    .fingers
                    .iter()
                    .map(|(s, p)| compare(p, &shard.finger(e, *s)))
                    .fold(0.0, |a, b| a + b);
                let c = Candidate { subject: shard.subjects[e], score };
                if best.is_none_or(|b| top_k(vec![b, c], 1)[0] == c) {
                    best = Some(c);
                }
            }
        }
        let scan_hit = best.filter(|c| c.score >= THRESHOLD);
        prop_assert_eq!(m.search(&q, 1).unwrap().hit, scan_hit);
    }
}
