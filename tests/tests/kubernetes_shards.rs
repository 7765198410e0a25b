//! A distributed index build and sharded serving on the test control plane, pods run by the process kubelet: an
//! IndexBuild with `shards: 3` over embeddings on the real S3 server (training Job, three add Jobs, one add pod
//! killed mid-run and retried, merge Job), then two SearchDeployments of it: one serving the three parts as shards
//! behind a front, one serving the merged folder. A text query through the front is answered as the unsharded
//! deployment answers it.

use clip_retrieval_tests::kube::ops::*;
use clip_retrieval_tests::kube::ControlPlane;
use clip_retrieval_tests::kubelet::{PID_ANNOTATION, PORT_ANNOTATION};
use clip_retrieval_tests::{
    inference_command, run, sample_dataset, shipped_model, S3Server, S3_ACCESS_KEY, S3_SECRET_KEY,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PER_PARTITION: u64 = 200;

fn ready(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The loopback port of a ready pod of SearchDeployment `name`'s front (what its Service routes to).
async fn front_port(client: &Client, ns: &str, name: &str) -> String {
    let selector = format!("clip-retrieval.io/search-deployment={name}");
    let pods = pods_with(client, ns, &selector).await;
    let pod = pods.iter().find(|p| ready(p)).unwrap_or_else(|| panic!("no ready pod of {name}"));
    pod.annotations()[PORT_ANNOTATION].clone()
}

async fn query(port: &str, text: &str) -> Vec<Value> {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/knn-service"))
        .body(
            json!({"text": text, "indice_name": "shapes", "num_images": 10, "num_result_ids": 50,
                     "deduplicate": true})
            .to_string(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_build_and_its_shards_answer_as_the_merged_deployment() {
    let plane = ControlPlane::shared_running_processes();
    let client = plane.client().await;
    install_crds(&client).await;
    let ns = plane.namespace("shards").await;
    let _operator = Operator::start(plane, &ns, "shards");

    // Embeddings of 600 rendered samples in three partitions, on S3 (s3s-fs stores objects as files).
    let s3 = S3Server::start(&["data"]);
    let bucket = s3.root.path().join("data");
    let dataset = s3.root.path().join("dataset");
    sample_dataset(&dataset, 3 * PER_PARTITION, 41, "files");
    let per = PER_PARTITION.to_string();
    let flags = ["--enable_metadata", "True", "--batch_size", "64", "--write_batch_size", per.as_str()];
    run(&mut inference_command(&dataset, &bucket.join("embeddings"), &flags), true);
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s3-credentials"},
        "stringData": {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();

    let model = shipped_model().display().to_string();
    let env = json!({"AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": "us-east-1", "CLIP_RETRIEVAL_LOG": "info"});
    let placement = |extra: Value| {
        let mut spec = json!({"image": "clip-retrieval:local", "env": env, "envFromSecret": "s3-credentials"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let build = placement(json!({"embeddings": {"uri": "s3://data/embeddings"}, "output": "s3://data/index",
                                 "maxIndexMemoryUsage": "100M", "shards": 3}));
    create(&client, &ns, "IndexBuild", "shapes", build).await.unwrap();
    let sharded = placement(json!({"indices": {"shapes": {"indexBuild": "shapes", "sharded": true}}, "model": model,
                                   "replicas": 1, "shardReplicas": 1}));
    create(&client, &ns, "SearchDeployment", "sharded", sharded).await.unwrap();
    let merged = placement(json!({"indices": {"shapes": {"indexBuild": "shapes"}}, "model": model, "replicas": 1}));
    create(&client, &ns, "SearchDeployment", "merged", merged).await.unwrap();

    // Kill part 1's add pod as soon as it runs: its Job runs it again, the other parts are not touched.
    let start = Instant::now();
    let part1 = "job-name=shapes-part1-g1-a1";
    let victim = loop {
        let list = pods_with(&client, &ns, part1).await;
        if let Some(pid) = list.first().and_then(|p| p.annotations().get(PID_ANNOTATION).cloned()) {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "part 1 never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(std::process::Command::new("kill").args(["-KILL", &victim]).status().unwrap().success());

    let built = wait_phase(&client, &ns, "IndexBuild", "shapes", "Complete", Duration::from_secs(300)).await;
    assert_eq!(built["partsDone"], "3/3", "{built}");
    assert_eq!(built["vectors"], 3 * PER_PARTITION, "{built}");
    let parts = built["parts"].as_array().unwrap();
    let offsets: Vec<u64> = parts.iter().map(|p| p["rowOffset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [0, PER_PARTITION, 2 * PER_PARTITION], "{built}");
    assert_eq!(parts[1]["partitions"], "1");
    assert_eq!(pods_with(&client, &ns, part1).await.len(), 2, "part 1's pod ran again after the kill");
    for other in ["job-name=shapes-part0-g1-a1", "job-name=shapes-part2-g1-a1"] {
        assert_eq!(pods_with(&client, &ns, other).await.len(), 1, "{other} ran once");
    }
    assert!(bucket.join("index/g1/metadata.arrow").is_file(), "merged into the generation's folder");
    assert!(bucket.join("index/g1/_COMPLETE").is_file(), "the merge's completion marker");
    assert!(bucket.join("index/g1-parts/2/image.index").is_file());
    assert!(bucket.join("index/g1-parts/2/_COMPLETE").is_file(), "the part's completion marker");

    for name in ["sharded", "merged"] {
        wait_until(Duration::from_secs(240), &format!("SearchDeployment {name} ready"), || async {
            let s = status(&client, &ns, "SearchDeployment", name).await;
            (condition(&s, "Ready")["status"] == "True").then_some(())
        })
        .await;
    }
    let shard_pods = pods_with(&client, &ns, "clip-retrieval.io/shard-of=sharded").await;
    assert_eq!(shard_pods.iter().filter(|p| ready(p)).count(), 3, "one ready pod per shard");
    let (front, whole) = (front_port(&client, &ns, "sharded").await, front_port(&client, &ns, "merged").await);
    for text in ["a red circle", "a small blue square on a grey background", "a green triangle"] {
        let (a, b) = (query(&front, text).await, query(&whole, text).await);
        assert!(!a.is_empty(), "{text}");
        let ids = |r: &[Value]| r.iter().map(|x| x["id"].as_i64().unwrap()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "{text}");
        for (x, y) in a.iter().zip(&b) {
            assert!((x["similarity"].as_f64().unwrap() - y["similarity"].as_f64().unwrap()).abs() < 1e-6);
            assert_eq!(x["caption"], y["caption"]);
        }
    }
}
