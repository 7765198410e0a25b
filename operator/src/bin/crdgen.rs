//! Writes the CRDs of the operator's resources as YAML: `crdgen [FOLDER...]`, by default into `crds/` (for
//! `kubectl apply -f crds/`) and `charts/clip-retrieval/crds/` (installed by Helm). A test fails when either drifts
//! from the Rust types.

fn main() {
    let mut dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        dirs = vec!["crds".into(), "charts/clip-retrieval/crds".into()];
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).expect("creating the CRD folder");
        for (file, yaml) in clip_operator::crds() {
            let path = std::path::Path::new(&dir).join(file);
            std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            println!("wrote {}", path.display());
        }
    }
}
