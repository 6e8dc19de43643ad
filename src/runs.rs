//! Run naming shared by every stage: the parts of a run folder's default name
//! that more than one stage writes. A leaf: it names no other module of the crate.

/// `-holdout-a+b` for held-out domains `a`, `b`; empty without.
pub fn holdout_suffix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("-holdout-{}", names.join("+"))
    }
}
