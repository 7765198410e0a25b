//! Names and label values of children, made to fit Kubernetes' 63-character limits. A resource's own name may be
//! up to 253 characters, but label values, Service names and the `job-name` label Jobs get are at most 63: a long
//! resource name is cut and given a hash of the whole, so children stay distinct and stable across restarts
//! (before, the API server refused the child with a 422 on every retry).

/// Longest label value and DNS-1035 label.
pub const MAX: usize = 63;

/// An 8-hex-digit tag of `text` (FNV-1a: stable across builds of the operator, unlike std's hasher).
pub fn tag(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    format!("{:08x}", hash as u32)
}

/// `name` followed by `suffix`, within [`MAX`] characters: unchanged when it fits, else the start of `name`, a
/// tag of the whole `name`, then `suffix`.
pub fn child(name: &str, suffix: &str) -> String {
    if name.len() + suffix.len() <= MAX {
        return format!("{name}{suffix}");
    }
    let keep = MAX.saturating_sub(suffix.len() + 9);
    let start = name.get(..keep.min(name.len())).unwrap_or(name).trim_end_matches(['-', '.']);
    format!("{start}-{}{suffix}", tag(name))
}

/// `name` as a label value (the resource a child belongs to).
pub fn label_value(name: &str) -> String {
    child(name, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_with_a_tag_and_short_ones_kept() {
        assert_eq!(child("laion", "-p3"), "laion-p3");
        assert_eq!(label_value("laion"), "laion");
        let long = "a".repeat(80);
        let other = format!("{}b", "a".repeat(79));
        for suffix in ["", "-p12345", "-part999-g12-a3"] {
            let n = child(&long, suffix);
            assert!(n.len() <= MAX && n.ends_with(suffix), "{n}");
            assert_ne!(n, child(&other, suffix), "names differing past the cut stay distinct");
            assert_eq!(n, child(&long, suffix), "stable");
        }
        assert!(!child(&format!("{}-{}", "x".repeat(53), "y".repeat(20)), "").contains("--"));
    }
}
