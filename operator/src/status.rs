//! Status helpers shared by the controllers: conditions that keep their transition time, RFC 3339 times, and the
//! partition-id range strings (`0-3,7`, the format of a Job's `completedIndexes`).

use crate::crd::Condition;
use std::collections::BTreeSet;

/// Current time, RFC 3339, seconds precision (as Kubernetes writes times).
pub fn now() -> String {
    let secs = k8s_openapi::jiff::Timestamp::now().as_second();
    k8s_openapi::jiff::Timestamp::from_second(secs).expect("now is a valid time").to_string()
}

/// Sets condition `type_` to `status`, keeping `lastTransitionTime` when the status does not change.
pub fn set_condition(conditions: &mut Vec<Condition>, type_: &str, status: bool, reason: &str, message: &str) {
    let status = if status { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(now());
            }
            c.status = status;
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Some(now()),
            observed_generation: None,
        }),
    }
}

/// Marks a resource Failed with `reason`: phase `Failed`, `Progressing` False and `Failed` True.
pub fn fail(phase: &mut String, conditions: &mut Vec<Condition>, reason: &str, message: &str) {
    *phase = "Failed".into();
    set_condition(conditions, "Progressing", false, reason, message);
    set_condition(conditions, "Failed", true, reason, message);
}

/// Records on every condition the spec generation it was computed from (each reconcile computes them all).
pub fn stamp(conditions: &mut [Condition], generation: Option<i64>) {
    for c in conditions {
        c.observed_generation = generation;
    }
}

/// Whether condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// Parses `0-3,7` into ids; malformed pieces are ignored (the string is ours or the Job controller's).
pub fn parse_ranges(s: &str) -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for piece in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match piece.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    ids.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = piece.parse() {
                    ids.insert(a);
                }
            }
        }
    }
    ids
}

/// Writes ids as `0-3,7`.
pub fn format_ranges(ids: &BTreeSet<u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = ids.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip_and_tolerate_noise() {
        let ids: BTreeSet<u32> = [0, 1, 2, 3, 7, 9, 10].into_iter().collect();
        assert_eq!(format_ranges(&ids), "0-3,7,9-10");
        assert_eq!(parse_ranges("0-3,7,9-10"), ids);
        assert_eq!(parse_ranges(""), BTreeSet::new());
        assert_eq!(parse_ranges("x,2,a-b"), [2].into_iter().collect());
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut c = Vec::new();
        set_condition(&mut c, "Complete", false, "Running", "1/4");
        let first = c[0].last_transition_time.clone();
        c[0].last_transition_time = Some("2000-01-01T00:00:00Z".into());
        set_condition(&mut c, "Complete", false, "Running", "2/4");
        assert_eq!(c[0].last_transition_time.as_deref(), Some("2000-01-01T00:00:00Z"));
        assert_eq!(c[0].message, "2/4");
        set_condition(&mut c, "Complete", true, "Done", "4/4");
        assert_ne!(c[0].last_transition_time.as_deref(), Some("2000-01-01T00:00:00Z"));
        assert!(first.is_some() && is_true(&c, "Complete") && !is_true(&c, "Failed"));
    }
}
