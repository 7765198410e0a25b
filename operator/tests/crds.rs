//! `crds/` and the chart's `crds/` must be what `crdgen` writes from the Rust types: regenerate with
//! `cargo run -p clip-operator --bin crdgen`.

#[test]
fn crd_files_match_the_rust_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["crds", "charts/clip-retrieval/crds"] {
        for (file, yaml) in clip_operator::crds() {
            let path = root.join(dir).join(file);
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "{} differs from the Rust types: run `cargo run -p clip-operator --bin crdgen`",
                path.display()
            );
        }
    }
}
