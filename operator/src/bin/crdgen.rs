//! Writes the CRDs of the operator's resources as YAML: `crdgen [crds/]` (the folder the Helm chart and `kubectl
//! apply -f crds/` use). A test fails when the files drift from the Rust types.

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "crds".into());
    std::fs::create_dir_all(&dir).expect("creating the CRD folder");
    for (file, yaml) in clip_operator::crds() {
        let path = std::path::Path::new(&dir).join(file);
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}
