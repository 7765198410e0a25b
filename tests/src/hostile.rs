//! What the fault suite (`tests/tests/faults.rs`) needs beside its inputs: the hostile images (from clip-synthetic)
//! and a peak-RSS probe for the process that gets them.

pub use clip_synthetic::hostile::{gradient_png, zero_png};

use std::process::{Child, Output};
use std::time::Duration;

/// `VmHWM` (peak resident set) of a running process, in bytes; 0 once it is gone.
pub fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Waits for `child`, sampling its peak RSS every 10 ms; returns its output and the last peak seen.
pub fn wait_with_peak_rss(mut child: Child) -> (Output, u64) {
    let pid = child.id();
    let mut peak = 0;
    loop {
        peak = peak.max(peak_rss_of(pid));
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child.wait_with_output().expect("output"), peak)
}
