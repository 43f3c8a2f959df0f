//! TODO(helper): exhaustive sharded matcher.
use crate::{MatchError, Matcher, SearchResult, SubjectId, Tenprint};

pub struct ExhaustiveMatcher {}

impl ExhaustiveMatcher {
    pub fn new(_shards: usize) -> Self {
        ExhaustiveMatcher {}
    }
}

impl Matcher for ExhaustiveMatcher {
    fn enroll(&self, _subject: SubjectId, _print: &Tenprint) -> Result<(), MatchError> {
        todo!()
    }
    fn search(&self, _probe: &Tenprint, _max: usize) -> Result<SearchResult, MatchError> {
        todo!()
    }
    fn len(&self) -> usize {
        0
    }
}
