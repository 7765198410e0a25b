//! What the API server supports, read once at start: the operator runs on v1.20 (CI) up to current clusters and
//! picks, per feature, the newest API the server has.

use kube::Client;

/// Features that differ across the supported server versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `major.minor` of the server.
    pub version: (u32, u32),
    /// `autoscaling/v2` HorizontalPodAutoscaler (1.23+); otherwise `autoscaling/v2beta2` (same fields).
    pub hpa_v2: bool,
    /// Indexed Jobs with per-index retry limits (`backoffLimitPerIndex`, on by default from 1.29): one Job runs
    /// every partition. Before that, one Job per partition gives each partition its own retry limit.
    pub indexed_jobs_per_index_backoff: bool,
    /// `Job.spec.suspend` (on by default from 1.22; what Kueue admits by). Before that a queued Job is held at
    /// parallelism 0 ([`crate::admission`]).
    pub job_suspend: bool,
    /// `policy/v1` PodDisruptionBudget (1.21+); otherwise `policy/v1beta1` (same fields).
    pub pdb_v1: bool,
}

impl Capabilities {
    /// What a server of this version offers (API discovery refines `hpa_v2` in [`Capabilities::detect`]).
    pub fn for_version(major: u32, minor: u32) -> Self {
        let at_least = |m: u32| (major, minor) >= (1, m);
        Capabilities {
            version: (major, minor),
            hpa_v2: at_least(23),
            indexed_jobs_per_index_backoff: at_least(29),
            job_suspend: at_least(22),
            pdb_v1: at_least(21),
        }
    }

    /// Asks the server: its version, and whether it serves `autoscaling/v2`.
    pub async fn detect(client: &Client) -> Result<Self, kube::Error> {
        let info = client.apiserver_version().await?;
        // Some distributions write the minor version as "20+".
        let number = |s: &str| s.trim_end_matches('+').parse::<u32>().unwrap_or(0);
        let mut caps = Capabilities::for_version(number(&info.major), number(&info.minor));
        let groups = client.list_api_groups().await?;
        caps.hpa_v2 = groups
            .groups
            .iter()
            .filter(|g| g.name == "autoscaling")
            .flat_map(|g| g.versions.iter())
            .any(|v| v.version == "v2");
        Ok(caps)
    }

    /// apiVersion of the PodDisruptionBudgets written.
    pub fn pdb_api_version(&self) -> &'static str {
        if self.pdb_v1 {
            "policy/v1"
        } else {
            "policy/v1beta1"
        }
    }

    /// apiVersion of the HorizontalPodAutoscalers written.
    pub fn hpa_api_version(&self) -> &'static str {
        if self.hpa_v2 {
            "autoscaling/v2"
        } else {
            "autoscaling/v2beta2"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_features() {
        let old = Capabilities::for_version(1, 20);
        assert!(!old.hpa_v2 && !old.indexed_jobs_per_index_backoff && !old.job_suspend);
        assert_eq!(old.hpa_api_version(), "autoscaling/v2beta2");
        assert_eq!(old.pdb_api_version(), "policy/v1beta1");
        assert_eq!(Capabilities::for_version(1, 21).pdb_api_version(), "policy/v1");
        let mid = Capabilities::for_version(1, 25);
        assert!(mid.hpa_v2 && !mid.indexed_jobs_per_index_backoff && mid.job_suspend);
        let new = Capabilities::for_version(1, 33);
        assert!(new.hpa_v2 && new.indexed_jobs_per_index_backoff);
        assert_eq!(new.hpa_api_version(), "autoscaling/v2");
    }
}
