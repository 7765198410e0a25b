//! Resume: a run killed with SIGKILL mid-way, then rerun on the same output folder, ends with every sample exactly
//! once; partitions finished before the kill are not recomputed.

use clip_retrieval_tests::{cli, python_summary, run, sample_dataset, shipped_model};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn killed_run_resumes_with_no_missing_and_no_duplicate_samples() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let output = dir.path().join("out");
    sample_dataset(&input, 480, 11, "files");
    let args = |c: &mut std::process::Command| {
        c.arg("inference")
            .arg("--input_dataset")
            .arg(&input)
            .arg("--output_folder")
            .arg(&output)
            .arg("--clip_model")
            .arg(shipped_model())
            .args([
                "--output_partition_count",
                "12",
                "--batch_size",
                "4",
                "--num_prepro_workers",
                "1",
                "--num_threads",
                "1",
                "--no_progress",
            ]);
    };
    let mut first = cli();
    args(&mut first);
    let mut child = first.spawn().unwrap();
    let stats_dir = output.join("stats");
    let done = |d: &std::path::Path| std::fs::read_dir(d).map(|r| r.flatten().filter(is_stats).count()).unwrap_or(0);
    let start = Instant::now();
    while done(&stats_dir) < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the run finished before it could be killed; make it longer");
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let finished_before: BTreeMap<_, _> = std::fs::read_dir(&stats_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(is_stats)
        .map(|e| (e.file_name(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    assert!(finished_before.len() < 12, "killed too late to test resume");

    let mut second = cli();
    args(&mut second);
    let out = run(&mut second, true);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("{} already done", finished_before.len())), "{stdout}");
    for (name, mtime) in &finished_before {
        let now = std::fs::metadata(stats_dir.join(name)).unwrap().modified().unwrap();
        assert_eq!(&now, mtime, "finished partition {name:?} was recomputed");
    }

    let summary = python_summary(&output);
    assert_eq!(summary.as_object().unwrap().len(), 12);
    let mut seen = BTreeMap::new();
    for p in summary.as_object().unwrap().values() {
        let rows = p["metadata_rows"].as_u64().unwrap();
        assert_eq!(p["img"]["rows"].as_u64().unwrap(), rows);
        assert_eq!(p["text"]["rows"].as_u64().unwrap(), rows);
        for path in p["image_path"].as_array().unwrap() {
            *seen.entry(path.as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 480, "missing samples");
    assert!(seen.values().all(|&n| n == 1), "duplicated samples");
    let leftovers: Vec<_> = walk(&output).into_iter().filter(|p| p.contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "temporary files left behind: {leftovers:?}");
}

/// A finished partition's stats file (not a temporary being written).
fn is_stats(e: &std::fs::DirEntry) -> bool {
    let name = e.file_name().to_string_lossy().into_owned();
    name.ends_with(".json") && !name.starts_with('.')
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}
