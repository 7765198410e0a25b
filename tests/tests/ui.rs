//! The web UI in a real browser: Debian's Chromium driven by playwright-core (front/e2e/ui.mjs) against a real
//! `clip-retrieval back` serving front/dist and an index built from the shipped model. Saves a screenshot under
//! tests/output/ui/.

use clip_retrieval_tests::{cli, repo_root, run, sample_dataset, shipped_model, BackServer};
use std::process::Command;

#[test]
fn search_page_works_in_chromium() {
    let front = repo_root().join("front");
    let dist = front.join("dist");
    assert!(
        dist.join("index.html").is_file(),
        "front/dist not built: run `npm run build` in front/ (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    sample_dataset(&data, 200, 21, "files");
    let emb = dir.path().join("emb");
    run(
        cli()
            .args(["inference", "--input_dataset"])
            .arg(&data)
            .arg("--output_folder")
            .arg(&emb)
            .arg("--clip_model")
            .arg(shipped_model())
            .args(["--no_progress", "--enable_metadata", "True"]),
        true,
    );
    let index = dir.path().join("index");
    run(
        cli().arg("index").arg("--embeddings_folder").arg(&emb).arg("--index_folder").arg(&index).arg("--no_progress"),
        true,
    );
    let paths = dir.path().join("indices_paths.json");
    std::fs::write(&paths, serde_json::json!({ "demo": index }).to_string()).unwrap();
    let server = BackServer::start(&paths, &["--front_dist", &dist.display().to_string()]);

    // A query image unlike the text query's results, so the page must really search again.
    let (image, caption) = (0..200)
        .map(|i| (data.join(format!("{i:09}.jpg")), std::fs::read_to_string(data.join(format!("{i:09}.txt"))).unwrap()))
        .find(|(_, c)| !c.contains("red circle"))
        .unwrap();
    let out = repo_root().join("tests/output/ui");
    std::fs::create_dir_all(&out).unwrap();
    let result = Command::new("node")
        .current_dir(&front)
        .arg("e2e/ui.mjs")
        .arg(server.url())
        .arg(&image)
        .arg(caption.trim())
        .arg(&out)
        .output()
        .expect("run node");
    assert!(
        result.status.success(),
        "browser checks failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
        server.log_text()
    );
    assert!(out.join("results.jpg").is_file() && out.join("results-phone.jpg").is_file());
}
