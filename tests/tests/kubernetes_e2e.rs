//! End to end on Kubernetes, as a user: start the control plane, `helm install` the chart, put a dataset rendered by
//! the synthetic generator on the real S3 server, apply an EmbeddingJob, an IndexBuild and a SearchDeployment, and
//! query the service by text, routed through its Ingress and Service objects. Pods really run: the process kubelet (`clip_retrieval_tests::kubelet`) starts the
//! project's binaries for them (the operator itself included, under the chart's ServiceAccount). One inference pod
//! is killed mid-run: the job still completes with every sample exactly once.

use clip_retrieval_tests::kube::ops::*;
use clip_retrieval_tests::kube::ControlPlane;
use clip_retrieval_tests::kubelet::{PID_ANNOTATION, PORT_ANNOTATION};
use clip_retrieval_tests::{
    cli, python_summary, repo_root, run, shipped_model, S3Server, S3_ACCESS_KEY, S3_SECRET_KEY,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SAMPLES: u64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_installs_the_chart_then_embeds_indexes_and_queries_on_kubernetes() {
    let plane = ControlPlane::shared_running_processes();
    let client = plane.client().await;
    let ns = plane.namespace("e2e").await;

    // The dataset on S3: 3 webdataset shards of 200 samples (s3s-fs stores objects as files).
    let s3 = S3Server::start(&["data"]);
    let bucket = s3.root.path().join("data");
    run(
        cli().args(["sample-dataset", "--output_folder"]).arg(bucket.join("shards")).args([
            "--count",
            &SAMPLES.to_string(),
            "--seed",
            "5",
            "--output_format",
            "webdataset",
            "--shard_size",
            "200",
        ]),
        true,
    );
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s3-credentials"},
        "stringData": {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();

    // The chart: its operator Deployment becomes a real operator process.
    let install = plane
        .helm()
        .args(["install", "clip-retrieval", &repo_root().join("charts/clip-retrieval").display().to_string()])
        .args(["--namespace", &ns, "--wait", "--timeout", "120s", "--set", "operator.replicas=1"])
        .args(["--set", &format!("operator.watchNamespace={ns}")])
        .output()
        .unwrap();
    assert!(install.status.success(), "helm install: {}", String::from_utf8_lossy(&install.stderr));

    let model = shipped_model().display().to_string();
    let env = json!({"AWS_ENDPOINT_URL": s3.endpoint, "AWS_REGION": "us-east-1", "CLIP_RETRIEVAL_LOG": "info"});
    let placement = |extra: Value| {
        let mut spec = json!({"image": "clip-retrieval:local", "env": env, "envFromSecret": "s3-credentials"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        spec
    };
    let embed = placement(json!({"input": "s3://data/shards/{00000..00002}.tar", "inputFormat": "webdataset",
        "output": "s3://data/embeddings", "model": model, "partitions": 3, "parallelism": 2, "batchSize": 32}));
    create(&client, &ns, "EmbeddingJob", "shapes", embed).await.unwrap();
    let build = placement(
        json!({"embeddings": {"embeddingJob": "shapes"}, "output": "s3://data/index", "maxIndexMemoryUsage": "100M"}),
    );
    create(&client, &ns, "IndexBuild", "shapes", build).await.unwrap();
    let serve = placement(json!({"indices": {"shapes": {"indexBuild": "shapes"}}, "model": model, "replicas": 1,
                                 "ingress": {"host": "search.test", "path": "/"}}));
    create(&client, &ns, "SearchDeployment", "shapes", serve).await.unwrap();

    // Kill partition 0's process as soon as it has started.
    let start = Instant::now();
    let victim = loop {
        let list = pods_with(&client, &ns, "clip-retrieval.io/partition=0").await;
        if let Some(pid) = list.first().and_then(|p| p.annotations().get(PID_ANNOTATION).cloned()) {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "partition 0 never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed = std::process::Command::new("kill").args(["-KILL", &victim]).status().unwrap();
    assert!(killed.success());

    let done = wait_phase(&client, &ns, "EmbeddingJob", "shapes", "Complete", Duration::from_secs(240)).await;
    assert_eq!(done["succeededPartitionIds"], "0-2");
    let partition0 = Api::<Job>::namespaced(client.clone(), &ns).get("shapes-p0").await.unwrap();
    assert_eq!(partition0.status.unwrap().failed, Some(1), "the killed pod was not counted as a failed attempt");
    assert_eq!(pods_with(&client, &ns, "clip-retrieval.io/partition=0").await.len(), 2, "partition 0 retried once");

    // Every sample exactly once, read back with numpy/pyarrow.
    let summary = python_summary(&bucket.join("embeddings"));
    let mut seen = HashSet::new();
    let mut rows = 0;
    for partition in summary.as_object().unwrap().values() {
        assert_eq!(partition["img"]["rows"], partition["metadata_rows"]);
        for path in partition["image_path"].as_array().unwrap() {
            rows += 1;
            seen.insert(path.as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen.len() as u64, SAMPLES, "distinct samples: {summary}");
    assert_eq!(rows as u64, SAMPLES, "{summary}");

    let built = wait_phase(&client, &ns, "IndexBuild", "shapes", "Complete", Duration::from_secs(180)).await;
    assert_eq!(built["vectors"], SAMPLES, "{built}");
    assert!(built["recallAt10"].as_f64().unwrap() > 0.5, "{built}");
    assert!(bucket.join("index/g1/image.index").is_file(), "generation 1's own folder");
    assert!(bucket.join("index/g1/_COMPLETE").is_file(), "its completion marker");

    let ready = wait_until(Duration::from_secs(120), "SearchDeployment ready", || async {
        let s = status(&client, &ns, "SearchDeployment", "shapes").await;
        (condition(&s, "Ready")["status"] == "True").then_some(s)
    })
    .await;
    assert_eq!(ready["readyReplicas"], 1);
    // Route the query as an ingress controller and kube-proxy would (neither runs here): Ingress rule for the host
    // -> Service -> its selector's ready pods -> the container port its targetPort names.
    let ingress = Api::<Ingress>::namespaced(client.clone(), &ns).get("shapes").await.unwrap().spec.unwrap();
    let rule = ingress.rules.unwrap().into_iter().find(|r| r.host.as_deref() == Some("search.test")).unwrap();
    let backend = rule.http.unwrap().paths[0].backend.service.clone().unwrap();
    let service = Api::<Service>::namespaced(client.clone(), &ns).get(&backend.name).await.unwrap().spec.unwrap();
    let service_port = service
        .ports
        .unwrap()
        .into_iter()
        .find(|p| Some(p.port) == backend.port.as_ref().and_then(|b| b.number))
        .unwrap();
    let selector: Vec<String> = service.selector.unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let ready: Vec<Pod> = pods_with(&client, &ns, &selector.join(","))
        .await
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect();
    assert_eq!(ready.len(), 1, "the Service selects the serving pod");
    let target = service_port.target_port.unwrap();
    let named = ready[0].spec.as_ref().unwrap().containers[0].ports.as_ref().unwrap().iter().any(|p| {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(p.name.clone().unwrap_or_default()) == target
    });
    assert!(named, "the Service's targetPort {target:?} names the container port");
    let port = ready[0].annotations()[PORT_ANNOTATION].clone();
    let answer: Vec<Value> = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/knn-service"))
        .body(json!({"text": "a red circle", "indice_name": "shapes", "num_images": 3}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let top = answer[0]["caption"].as_str().unwrap_or_default();
    assert!(top.contains("red") && top.contains("circle"), "top result for 'a red circle': {}", answer[0]);
}
