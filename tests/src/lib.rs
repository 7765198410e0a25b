//! The test world: paths of the repository's artefacts, the built `clip-retrieval` binary, a real S3 server
//! (s3s-fs, SigV4) on 127.0.0.1, a running `clip-retrieval back`, and Python (numpy/pyarrow) to read outputs as
//! users do. Everything a test starts
//! is stopped when its handle drops. `scripts/setup.sh` installs what is used here.

pub mod hostile;
pub mod kube;
pub mod kubelet;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the repository").to_path_buf()
}

/// The shipped model folder.
pub fn shipped_model() -> PathBuf {
    repo_root().join("models/tiny-clip")
}

/// The `clip-retrieval` binary of the current build profile (cargo builds it for the workspace's tests).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("clip-retrieval");
    assert!(bin.is_file(), "{} not built: run `cargo build --workspace` or the README's test command", bin.display());
    bin
}

/// A `clip-retrieval` command with logging kept quiet.
pub fn cli() -> Command {
    let mut c = Command::new(binary());
    c.env("CLIP_RETRIEVAL_LOG", "warn");
    c
}

/// Runs a command, returning its output; panics with its stderr when it fails and `expect_ok` is set.
pub fn run(cmd: &mut Command, expect_ok: bool) -> Output {
    let out = cmd.output().expect("spawn command");
    if expect_ok && !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The project's Python venv (numpy, pyarrow), installed by scripts/setup.sh.
pub fn python() -> Command {
    let py = repo_root().join(".cache/venv/bin/python");
    assert!(py.is_file(), "{} missing: run scripts/setup.sh", py.display());
    Command::new(py)
}

/// Copies the folder `from` into `to`, recursively (created as needed).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind an ephemeral port").port()
}

/// Waits until something accepts TCP connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listening on 127.0.0.1:{port} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real S3-compatible server (s3s-fs) with SigV4 credentials, stopped on drop.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Where buckets live on disk (one folder per bucket).
    pub root: tempfile::TempDir,
}

/// Access key of the test S3 server.
pub const S3_ACCESS_KEY: &str = "clip-test";
/// Secret key of the test S3 server.
pub const S3_SECRET_KEY: &str = "clip-test-secret";

impl S3Server {
    /// Starts s3s-fs on a free port with the given buckets.
    pub fn start(buckets: &[&str]) -> Self {
        let bin = repo_root().join(".cache/bin/s3s-fs");
        assert!(bin.exists(), "{} missing: run scripts/setup.sh", bin.display());
        let root = tempfile::tempdir().expect("temp dir");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket dir");
        }
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                S3_ACCESS_KEY,
                "--secret-key",
                S3_SECRET_KEY,
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        wait_for_port(port, Duration::from_secs(10));
        Self { child, endpoint: format!("http://127.0.0.1:{port}"), root }
    }

    /// Sets the AWS environment a user would set to reach this server.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `clip-retrieval inference` of `input` into `output` with the shipped model, no progress bar and two
/// preprocessing threads; `extra` flags after those.
pub fn inference_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut command = cli();
    command
        .arg("inference")
        .arg("--input_dataset")
        .arg(input)
        .arg("--output_folder")
        .arg(output)
        .arg("--clip_model")
        .arg(shipped_model())
        .args(["--no_progress", "--num_prepro_workers", "2"])
        .args(extra);
    command
}

/// Renders `count` synthetic samples as a files dataset.
pub fn sample_dataset(dir: &Path, count: u64, seed: u64, format: &str) {
    run(
        cli().args(["sample-dataset", "--output_folder"]).arg(dir).args([
            "--count",
            &count.to_string(),
            "--seed",
            &seed.to_string(),
            "--output_format",
            format,
            "--shard_size",
            "40",
        ]),
        true,
    );
}

/// Reads `img_emb`/`text_emb` npy and metadata parquet of one output folder with numpy/pyarrow and returns, per
/// partition file name, `(image rows, text rows, metadata rows, image_paths)` as JSON.
pub fn python_summary(output: &Path) -> serde_json::Value {
    let script = r#"
import glob, io, json, os, sys
import numpy as np, pyarrow.parquet as pq
out = {}
root = sys.argv[1]
for meta in sorted(glob.glob(os.path.join(root, "metadata", "metadata_*.parquet"))):
    n = os.path.basename(meta)[len("metadata_"):-len(".parquet")]
    t = pq.read_table(meta)
    row = {"metadata_rows": t.num_rows, "columns": t.column_names}
    for kind, folder in (("img", "img_emb"), ("text", "text_emb")):
        p = os.path.join(root, folder, f"{folder}_{n}.npy")
        if os.path.exists(p):
            a = np.load(p)
            norms = np.linalg.norm(a.astype(np.float32), axis=1) if len(a) else np.ones(1)
            buf = io.BytesIO()
            np.save(buf, a)
            same = buf.getvalue() == open(p, "rb").read()
            row[kind] = {"rows": a.shape[0], "dim": a.shape[1], "dtype": str(a.dtype), "min_norm": float(norms.min()),
                         "max_norm": float(norms.max()), "numpy_identical": same}
    if "image_path" in t.column_names:
        row["image_path"] = t.column("image_path").to_pylist()
    if "caption" in t.column_names:
        row["caption"] = t.column("caption").to_pylist()
    out[n] = row
print(json.dumps(out))
"#;
    let o = run(python().arg("-c").arg(script).arg(output), true);
    serde_json::from_slice(&o.stdout).expect("python printed JSON")
}

/// Clustered unit vectors like CLIP embeddings (not uniform noise): `clusters` random centres, each point a centre
/// plus gaussian noise of scale `spread`, normalised. Deterministic per seed.
pub fn clustered_embeddings(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut gauss = move || -> f32 {
        // Box-Muller.
        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    };
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| normalised((0..dim).map(|_| gauss()).collect())).collect();
    (0..n)
        .map(|i| {
            let c = &centres[(i * 7919) % clusters];
            normalised(c.iter().map(|x| x + spread * gauss() / (dim as f32).sqrt()).collect())
        })
        .collect()
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Writes rows as `<folder>/img_emb/img_emb_N.npy` partitions of `per_partition` rows (alternating f16 and f32 as
/// both occur in practice) and a matching `metadata/metadata_N.parquet` with `caption` = "row <global id>".
/// Returns the rows as they read back (f16 rounding applied), for exact reference search.
pub fn write_embeddings_folder(folder: &Path, rows: &[Vec<f32>], per_partition: usize) -> Vec<Vec<f32>> {
    use clip_data::npy::{NpyDtype, NpyWriter};
    let count = rows.len().div_ceil(per_partition);
    std::fs::create_dir_all(folder.join("img_emb")).unwrap();
    let mut stored = Vec::with_capacity(rows.len());
    for (p, chunk) in rows.chunks(per_partition).enumerate() {
        let name = clip_data::partition_name(p, count);
        let dtype = if p % 2 == 0 { NpyDtype::F16 } else { NpyDtype::F32 };
        let file = std::fs::File::create(folder.join(format!("img_emb/img_emb_{name}.npy"))).unwrap();
        let mut w = NpyWriter::new(file, dtype, chunk[0].len()).unwrap();
        let mut table = clip_data::metadata::MetadataTable::new(false, true);
        for (i, r) in chunk.iter().enumerate() {
            w.write_row(r).unwrap();
            stored.push(match dtype {
                NpyDtype::F16 => r.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
                NpyDtype::F32 => r.clone(),
            });
            table.push(clip_data::metadata::MetadataRow {
                caption: Some(format!("row {}", p * per_partition + i)),
                ..Default::default()
            });
        }
        w.finish().unwrap();
        let target = clip_data::Location::Local(folder.join(format!("metadata/metadata_{name}.parquet")));
        table.write(&clip_data::Storage::from_env(), &target).unwrap();
    }
    stored
}

/// Exact top-`k` by inner product in float64: `(id, score)`, best first, ties by id.
pub fn brute_force_ip(rows: &[Vec<f32>], query: &[f32], k: usize) -> Vec<(i64, f64)> {
    let mut scored: Vec<(i64, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (i as i64, r.iter().zip(query).map(|(a, b)| *a as f64 * *b as f64).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

/// Runs `clip-retrieval index` (no progress bar, `extra` flags) and returns the image index's `image.json`.
pub fn build_index(embeddings: &Path, index: &Path, extra: &[&str]) -> serde_json::Value {
    run(
        cli()
            .arg("index")
            .arg("--embeddings_folder")
            .arg(embeddings)
            .arg("--index_folder")
            .arg(index)
            .args(["--no_progress"])
            .args(extra),
        true,
    );
    serde_json::from_slice(&std::fs::read(index.join("image.json")).unwrap()).unwrap()
}

/// recall@10 of a loaded index's own search path (re-ranking included) on `queries`, against float64 brute force
/// over `rows`.
pub fn recall_at_10(index: &clip_index::LoadedIndex, rows: &[Vec<f32>], queries: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for q in queries {
        let truth: Vec<i64> = brute_force_ip(rows, q, 10).into_iter().map(|(id, _)| id).collect();
        let found: Vec<i64> = index.search(q, 10).unwrap().row(0).map(|(id, _)| id).collect();
        total += truth.iter().filter(|id| found.contains(id)).count() as f64 / 10.0;
    }
    total / queries.len() as f64
}

/// Resident memory of this process now (VmRSS), in bytes.
pub fn rss_bytes() -> u64 {
    clip_index::build::proc_status_bytes("VmRSS")
}

/// A `clip-retrieval back` process on 127.0.0.1, ready (indices loaded); stopped with SIGTERM when dropped.
pub struct BackServer {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    log: PathBuf,
}

impl BackServer {
    /// Starts `back --indices_paths <paths> <extra>` and waits for `/readyz`.
    pub fn start(indices_paths: &Path, extra: &[&str]) -> Self {
        Self::start_with(indices_paths, extra, |_| {})
    }

    /// As [`BackServer::start`], with the command adjusted first (e.g. [`S3Server::configure`]).
    pub fn start_with(indices_paths: &Path, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("clip-back-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("server log file");
        let mut command = cli();
        configure(&mut command);
        let child = command
            .env("CLIP_RETRIEVAL_LOG", "info")
            .arg("back")
            .arg("--indices_paths")
            .arg(indices_paths)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn clip-retrieval back");
        let mut server = Self { child: Some(child), port, log };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("clip-retrieval back exited ({status}) before ready:\n{}", self.log_text());
            }
            if http_get(self.port, "/readyz").map(|(code, _)| code == 200).unwrap_or(false) {
                return;
            }
            assert!(start.elapsed() < timeout, "back not ready after {timeout:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("back did not stop within 20 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BackServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A minimal HTTP/1.1 GET on 127.0.0.1 (for readiness polls without a client library): `(status, body)`.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}
