//! Batch admission against the real control plane (v1.20.2, fake kubelet): Jobs of a `queueName` wait for a queue
//! and the test plays Kueue, admitting them one at a time; `suspend` stops a running EmbeddingJob and resumes it;
//! an IndexBuild's build Job is queued the same way; the GPU example (runtimeClassName, tolerations, queue) runs
//! once admitted.
//!
//! v1.20 has no `Job.spec.suspend`, so a queued Job is held at parallelism 0 with its parallelism in the annotation
//! `clip-retrieval.io/held-parallelism`, and admitting means setting it back (on 1.22+ it is `spec.suspend`, which
//! Kueue flips; the operator's unit tests cover that form).

use clip_retrieval_tests::kube::ops::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::time::Duration;

const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
const HELD: &str = "clip-retrieval.io/held-parallelism";

/// `(status, reason, message)` of condition `type_`.
fn cond(status: &Value, type_: &str) -> (String, String, String) {
    let c = condition(status, type_);
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

/// What Kueue does on admission, in the form a 1.20 server allows: the held parallelism is given back.
async fn admit(jobs: &Api<Job>, name: &str) {
    let job = jobs.get(name).await.unwrap();
    let parallelism: i32 = job.annotations()[HELD].parse().unwrap();
    let patch = json!({"metadata": {"annotations": {HELD: null}}, "spec": {"parallelism": parallelism}});
    jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

async fn set_spec(client: &kube::Client, ns: &str, kind: &str, name: &str, spec: Value) {
    let patch = json!({ "spec": spec });
    custom(client, ns, kind).patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_partitions_wait_for_the_queue_and_run_as_it_admits_them() {
    let (plane, client, ns) = setup("queue").await;
    let _operator = Operator::start(plane, &ns, "a");
    let spec = json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 2, "parallelism": 2,
                      "queueName": "gpu", "image": "clip-retrieval:test", "env": {"FAKE_RUN_SECONDS": "1"}});
    create(&client, &ns, "EmbeddingJob", "q", spec).await.unwrap();
    let queued = wait_phase(&client, &ns, "EmbeddingJob", "q", "Queued", Duration::from_secs(30)).await;
    let (status_, reason, message) = cond(&queued, "Queued");
    assert_eq!((status_.as_str(), reason.as_str()), ("True", "WaitingForAdmission"));
    assert_eq!(message, "2 Job(s) wait for admission by LocalQueue gpu: q-p0, q-p1");
    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    for job in jobs(&client, &ns).await {
        assert_eq!(job.labels()[QUEUE_LABEL], "gpu");
        assert_eq!(job.annotations()[HELD], "1");
        assert_eq!(job.spec.as_ref().unwrap().parallelism, Some(0), "{}", job.name_any());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods_with(&client, &ns, "clip-retrieval.io/embedding-job=q").await.is_empty(), "a queued Job ran a pod");

    // The queue admits one partition: it runs; the other still waits, so the resource is Queued again.
    admit(&jobs_api, "q-p0").await;
    let one = wait_until(Duration::from_secs(40), "partition 0 done", || async {
        let s = status(&client, &ns, "EmbeddingJob", "q").await;
        (s["partitionsSucceeded"] == 1 && s["phase"] == "Queued").then_some(s)
    })
    .await;
    assert_eq!(cond(&one, "Queued").2, "1 Job(s) wait for admission by LocalQueue gpu: q-p1");
    admit(&jobs_api, "q-p1").await;
    let done = wait_phase(&client, &ns, "EmbeddingJob", "q", "Complete", Duration::from_secs(40)).await;
    assert_eq!(cond(&done, "Queued"), ("False".into(), "Admitted".into(), "LocalQueue gpu admitted the Jobs".into()));
    assert!(event_reasons(&client, &ns, "q").await.contains(&"Queued".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_a_running_embedding_job_and_resuming_finishes_it() {
    let (plane, client, ns) = setup("suspend").await;
    let _operator = Operator::start(plane, &ns, "a");
    let spec = json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 1, "image": "clip-retrieval:test",
                      "env": {"FAKE_RUN_SECONDS": "600"}});
    create(&client, &ns, "EmbeddingJob", "s", spec).await.unwrap();
    wait_until(Duration::from_secs(30), "a running pod", || async {
        let pods = pods_with(&client, &ns, "clip-retrieval.io/embedding-job=s").await;
        pods.iter().any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).then_some(())
    })
    .await;
    set_spec(&client, &ns, "EmbeddingJob", "s", json!({"suspend": true})).await;
    let suspended = wait_phase(&client, &ns, "EmbeddingJob", "s", "Suspended", Duration::from_secs(30)).await;
    let (status_, reason, message) = cond(&suspended, "Suspended");
    assert_eq!((status_.as_str(), reason.as_str()), ("True", "Suspended"));
    assert!(message.starts_with("spec.suspend is true"), "{message}");
    assert_eq!(cond(&suspended, "Progressing").0, "False");
    wait_until(Duration::from_secs(30), "the Job stopped", || async {
        let jobs = jobs(&client, &ns).await;
        jobs.iter().all(|j| j.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(jobs(&client, &ns).await.iter().all(|j| j.metadata.deletion_timestamp.is_some()), "a Job started");

    set_spec(&client, &ns, "EmbeddingJob", "s", json!({"suspend": false, "env": {"FAKE_RUN_SECONDS": "1"}})).await;
    let done = wait_phase(&client, &ns, "EmbeddingJob", "s", "Complete", Duration::from_secs(40)).await;
    assert_eq!(cond(&done, "Suspended").1, "Resumed");
    assert_eq!(done["partitionsSucceeded"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_index_build_waits_for_admission() {
    let (plane, client, ns) = setup("queueib").await;
    let _operator = Operator::start(plane, &ns, "a");
    let report = r#"{"indices":{"image":{"index_key":"Flat","index_bytes":100,"recall_at_10":1.0,"count":4}}}"#;
    let spec = json!({"embeddings": {"uri": "s3://data/emb"}, "output": "s3://data/index", "queueName": "cpu",
                      "image": "clip-retrieval:test", "env": {"FAKE_TERMINATION_MESSAGE": report}});
    create(&client, &ns, "IndexBuild", "idx", spec).await.unwrap();
    let queued = wait_phase(&client, &ns, "IndexBuild", "idx", "Queued", Duration::from_secs(30)).await;
    assert_eq!(cond(&queued, "Queued").2, "1 Job(s) wait for admission by LocalQueue cpu: idx-build-g1");
    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    admit(&jobs_api, "idx-build-g1").await;
    let done = wait_phase(&client, &ns, "IndexBuild", "idx", "Complete", Duration::from_secs(60)).await;
    assert_eq!(done["latestComplete"]["folder"], "s3://data/index/g1");
    assert_eq!(cond(&done, "Queued").1, "Admitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gpu_example_is_queued_and_runs_with_its_runtime_class_and_tolerations_once_admitted() {
    let (plane, client, ns) = setup("gpuexample").await;
    let _operator = Operator::start(plane, &ns, "a");
    // What the example expects of its cluster: the nvidia RuntimeClass and the S3 ServiceAccount.
    let runtime_classes = Api::<k8s_openapi::api::node::v1::RuntimeClass>::all(client.clone());
    if runtime_classes.get_opt("nvidia").await.unwrap().is_none() {
        let class = serde_json::from_value(json!({"metadata": {"name": "nvidia"}, "handler": "nvidia"})).unwrap();
        runtime_classes.create(&Default::default(), &class).await.unwrap();
    }
    let account = serde_json::from_value(json!({"metadata": {"name": "s3-reader"}})).unwrap();
    Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &account)
        .await
        .unwrap();
    let path = clip_retrieval_tests::repo_root().join("examples/gpu/embeddingjob.yaml");
    let example: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut spec = example["spec"].clone();
    spec["partitions"] = json!(2);
    spec["parallelism"] = json!(2);
    spec["env"]["FAKE_RUN_SECONDS"] = json!("0.5");
    spec["nodeSelector"] = json!({});
    create(&client, &ns, "EmbeddingJob", "laion-gpu", spec).await.unwrap();
    let queued = wait_phase(&client, &ns, "EmbeddingJob", "laion-gpu", "Queued", Duration::from_secs(30)).await;
    assert!(cond(&queued, "Queued").2.contains("by LocalQueue gpu-queue"), "{queued}");
    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    for name in ["laion-gpu-p0", "laion-gpu-p1"] {
        let pod = jobs_api.get(name).await.unwrap().spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.runtime_class_name.as_deref(), Some("nvidia"));
        assert_eq!(pod.service_account_name.as_deref(), Some("s3-reader"));
        assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
        admit(&jobs_api, name).await;
    }
    wait_phase(&client, &ns, "EmbeddingJob", "laion-gpu", "Complete", Duration::from_secs(60)).await;
}
