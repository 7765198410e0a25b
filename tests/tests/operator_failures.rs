//! What a user sees in `kubectl describe` when a resource cannot make progress, against the real control plane
//! (v1.20.2, fake kubelet): a missing Secret (Degraded, then Failed after the stuck-pod timeout; recovery when the
//! Secret appears), a name taken by an object the resource does not own (Failed/Conflict, nothing adopted), a
//! persistent API refusal (a ResourceQuota: Degraded with the server's reason and doubling retry delays, then
//! recovery), a name over 63 characters, generations, and `extraArgs` the CLI refuses. Each test runs its own
//! operator in its own namespace.

use clip_retrieval_tests::kube::ops::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ResourceQuota, Secret, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn embedding_job(env: Value) -> Value {
    json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 1, "image": "clip-retrieval:test",
           "env": env, "envFromSecret": "s3-credentials"})
}

/// `(status, reason, message)` of condition `type_`.
fn cond(status: &Value, type_: &str) -> (String, String, String) {
    let c = condition(status, type_);
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_degrades_then_fails_after_the_timeout_and_recovers_when_created() {
    let (plane, client, ns) = setup("secret").await;
    let _operator = Operator::start_with(plane, &ns, "a", &["--stuck-pod-timeout-seconds", "12"]);
    create(&client, &ns, "EmbeddingJob", "nosecret", embedding_job(json!({}))).await.unwrap();
    let degraded = wait_until(Duration::from_secs(30), "Degraded", || async {
        let s = status(&client, &ns, "EmbeddingJob", "nosecret").await;
        (condition(&s, "Degraded")["status"] == "True").then_some(s)
    })
    .await;
    let (_, reason, message) = cond(&degraded, "Degraded");
    assert_eq!(reason, "CreateContainerConfigError");
    assert!(
        message.starts_with("pod nosecret-p0-") && message.ends_with("secret \"s3-credentials\" not found"),
        "{message}"
    );
    let c = condition(&degraded, "Degraded");
    assert_eq!(c["observedGeneration"], 1, "{c}");
    assert!(c["lastTransitionTime"].is_string(), "{c}");
    assert_eq!(degraded["phase"], "Running", "still within the timeout");

    let failed = wait_phase(&client, &ns, "EmbeddingJob", "nosecret", "Failed", Duration::from_secs(40)).await;
    let (status_, reason, message) = cond(&failed, "Failed");
    assert_eq!((status_.as_str(), reason.as_str()), ("True", "CreateContainerConfigError"));
    assert!(
        message.contains("secret \"s3-credentials\" not found") && message.contains("over the 12s limit"),
        "{message}"
    );
    let events = event_reasons(&client, &ns, "nosecret").await;
    assert!(
        events.contains(&"CreateContainerConfigError".to_string()) && events.contains(&"Failed".to_string()),
        "{events:?}"
    );
    wait_until(Duration::from_secs(30), "the stuck Job stopped", || async {
        let jobs = jobs(&client, &ns).await;
        jobs.iter()
            .all(|j| !j.name_any().starts_with("nosecret") || j.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;

    // The same mistake fixed in time: the Secret appears, the pod starts, Degraded clears.
    create(&client, &ns, "EmbeddingJob", "late", embedding_job(json!({"FAKE_RUN_SECONDS": "1"}))).await.unwrap();
    wait_until(Duration::from_secs(30), "Degraded", || async {
        let s = status(&client, &ns, "EmbeddingJob", "late").await;
        (condition(&s, "Degraded")["status"] == "True").then_some(())
    })
    .await;
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s3-credentials"},
        "stringData": {"AWS_ACCESS_KEY_ID": "k"}}))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
    let done = wait_phase(&client, &ns, "EmbeddingJob", "late", "Complete", Duration::from_secs(40)).await;
    assert_eq!(cond(&done, "Degraded").0, "False");
    assert_eq!(cond(&done, "Degraded").1, "Recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_an_object_the_resource_does_not_own_fails_with_conflict_and_adopts_nothing() {
    let (plane, client, ns) = setup("clash").await;
    let _operator = Operator::start(plane, &ns, "a");
    let services = Api::<Service>::namespaced(client.clone(), &ns);
    let theirs: Service = serde_json::from_value(json!({"metadata": {"name": "web", "labels": {"team": "other"}},
        "spec": {"selector": {"app": "other"}, "ports": [{"port": 80, "protocol": "TCP"}]}}))
    .unwrap();
    services.create(&PostParams::default(), &theirs).await.unwrap();
    let spec = json!({"indices": {"a": {"uri": "s3://x"}}, "image": "clip-retrieval:test"});
    create(&client, &ns, "SearchDeployment", "web", spec).await.unwrap();
    let s = wait_until(Duration::from_secs(30), "Conflict", || async {
        let s = status(&client, &ns, "SearchDeployment", "web").await;
        (condition(&s, "Failed")["status"] == "True").then_some(s)
    })
    .await;
    let (_, reason, message) = cond(&s, "Failed");
    assert_eq!(reason, "Conflict");
    assert_eq!(
        message,
        "Service web already exists and is not managed by the operator: SearchDeployment web would take it over; \
         rename the SearchDeployment or delete that Service"
    );
    let untouched = services.get("web").await.unwrap();
    assert!(untouched.owner_references().is_empty(), "adopted: {:?}", untouched.owner_references());
    assert_eq!(untouched.spec.unwrap().selector.unwrap()["app"], "other");
    assert!(event_reasons(&client, &ns, "web").await.contains(&"Conflict".to_string()));

    // The other object goes: the next try (after the back-off) creates the Service and clears Failed.
    services.delete("web", &DeleteParams::default()).await.unwrap();
    wait_until(Duration::from_secs(40), "recovered", || async {
        let s = status(&client, &ns, "SearchDeployment", "web").await;
        let ours = services.get_opt("web").await.ok()??;
        (condition(&s, "Failed")["status"] == "False" && !ours.owner_references().is_empty()).then_some(())
    })
    .await;
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("web").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_api_refusal_is_degraded_with_the_servers_words_retried_with_doubling_delays_then_recovers() {
    let (plane, client, ns) = setup("backoff").await;
    let _operator = Operator::start(plane, &ns, "a");
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &ns);
    let quota: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "no-jobs"}, "spec": {"hard": {"count/jobs.batch": "0"}}}))
            .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let spec =
        json!({"embeddings": {"uri": "s3://data/emb"}, "output": "s3://data/idx", "image": "clip-retrieval:test"});
    create(&client, &ns, "IndexBuild", "idx", spec).await.unwrap();
    // Failure n waits 5 s x 2^(n-1): the Degraded message names each failure and its delay (Degraded from the
    // second failure on).
    let mut seen: Vec<(u32, u64, Instant)> = Vec::new();
    while seen.len() < 2 {
        let (n, wait) = wait_until(Duration::from_secs(60), "a new failure", || async {
            let s = status(&client, &ns, "IndexBuild", "idx").await;
            let (status_, reason, message) = cond(&s, "Degraded");
            if status_ != "True" {
                return None;
            }
            assert_eq!(reason, "Forbidden", "{message}");
            assert!(message.contains("quota: no-jobs"), "{message}");
            let n: u32 = message.split("(failure ").nth(1)?.split(',').next()?.parse().ok()?;
            let wait: u64 = message.split("next try in ").nth(1)?.trim_end_matches("s)").parse().ok()?;
            (seen.last().map(|l| l.0) != Some(n)).then_some((n, wait))
        })
        .await;
        seen.push((n, wait, Instant::now()));
    }
    let (first, second) = (seen[0], seen[1]);
    assert_eq!(second.0, first.0 + 1, "{seen:?}");
    assert_eq!(second.1, first.1 * 2, "delays double: {seen:?}");
    let gap = second.2 - first.2;
    assert!(gap >= Duration::from_secs(first.1 - 1), "retried after {gap:?}, not the {}s back-off", first.1);
    assert!(event_reasons(&client, &ns, "idx").await.contains(&"Forbidden".to_string()));

    // The quota goes: the next try creates the Job and Degraded clears.
    quotas.delete("no-jobs", &DeleteParams::default()).await.unwrap();
    let recovered = wait_until(Duration::from_secs(90), "recovered", || async {
        let s = status(&client, &ns, "IndexBuild", "idx").await;
        (condition(&s, "Degraded")["status"] == "False").then_some(s)
    })
    .await;
    assert_eq!(cond(&recovered, "Degraded").1, "Recovered");
    assert!(Api::<Job>::namespaced(client.clone(), &ns).get_opt("idx-build-g1").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_over_63_characters_runs_with_cut_names_and_labels() {
    let (plane, client, ns) = setup("longname").await;
    let _operator = Operator::start(plane, &ns, "a");
    let name = format!("embeddings-of-the-whole-laion-dataset-{}", "x".repeat(50));
    let spec = json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 2, "parallelism": 2,
                      "image": "clip-retrieval:test"});
    create(&client, &ns, "EmbeddingJob", &name, spec).await.unwrap();
    let done = wait_phase(&client, &ns, "EmbeddingJob", &name, "Complete", Duration::from_secs(60)).await;
    assert_eq!(done["partitionsSucceeded"], 2);
    let jobs = jobs(&client, &ns).await;
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert!(job.name_any().len() <= 63, "{}", job.name_any());
        assert!(job.labels().values().all(|v| v.len() <= 63), "{:?}", job.labels());
    }
}

const REPORT: &str = r#"{"indices":{"image":{"index_key":"Flat","index_bytes":100,"recall_at_10":1.0,"count":4}}}"#;

/// Merges `env` into the IndexBuild's fake-kubelet env (a new spec generation; earlier keys stay).
async fn rebuild(client: &kube::Client, ns: &str, env: Value) {
    let patch = json!({"spec": {"env": env}});
    custom(client, ns, "IndexBuild")
        .patch("idx", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_never_mix_a_new_one_stops_the_last_a_failed_one_is_not_served() {
    let (plane, client, ns) = setup("generations").await;
    let _operator = Operator::start(plane, &ns, "a");
    let spec = json!({"embeddings": {"uri": "s3://data/emb"}, "output": "s3://data/index", "image": "clip-retrieval:test",
                      "env": {"FAKE_TERMINATION_MESSAGE": REPORT}});
    create(&client, &ns, "IndexBuild", "idx", spec).await.unwrap();
    let first = wait_phase(&client, &ns, "IndexBuild", "idx", "Complete", Duration::from_secs(60)).await;
    assert_eq!(first["latestComplete"]["generation"], 1);
    assert_eq!(first["latestComplete"]["folder"], "s3://data/index/g1");
    let sd = json!({"indices": {"laion": {"indexBuild": "idx"}}, "image": "clip-retrieval:test"});
    create(&client, &ns, "SearchDeployment", "web", sd).await.unwrap();
    let serves = |generation: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            wait_until(Duration::from_secs(60), generation, || async {
                let s = status(&client, &ns, "SearchDeployment", "web").await;
                (s["loadedIndices"]["laion"] == generation).then_some(s)
            })
            .await
        }
    };
    serves("idx@g1").await;
    let config = || async {
        let maps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns);
        let data = maps.get("web-indices").await.unwrap().data.unwrap();
        serde_json::from_str::<Value>(&data["indices_paths.json"]).unwrap()
    };
    assert_eq!(
        config().await["laion"],
        json!({"indice_folder": "s3://data/index/g1", "require_completion_marker": true})
    );

    // Generation 2 runs long; generation 3 starts while it runs: 2's Job is stopped.
    rebuild(&client, &ns, json!({"FAKE_TERMINATION_MESSAGE": REPORT, "FAKE_RUN_SECONDS": "600"})).await;
    let jobs_api = Api::<Job>::namespaced(client.clone(), &ns);
    wait_until(Duration::from_secs(30), "generation 2 running", || async {
        jobs_api.get_opt("idx-build-g2").await.ok()?.map(|_| ())
    })
    .await;
    rebuild(
        &client,
        &ns,
        json!({"FAKE_EXIT_CODE": "1", "FAKE_RUN_SECONDS": "0.5", "FAKE_TERMINATION_MESSAGE": "Error: disk full"}),
    )
    .await;
    wait_until(Duration::from_secs(30), "generation 2 stopped", || async {
        let g2 = jobs_api.get_opt("idx-build-g2").await.ok()?;
        g2.is_none_or(|j| j.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    // Generation 3 fails: the SearchDeployment keeps serving generation 1, untouched.
    // (The Job controller waits 10 s, then 20 s, between a failed pod and its retry.)
    let started = Instant::now();
    let failed = loop {
        let s = status(&client, &ns, "IndexBuild", "idx").await;
        if s["phase"] == "Failed" && s["observedGeneration"] == 3 {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "generation 3 did not fail: {s}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, reason, message) = cond(&failed, "Failed");
    assert_eq!(reason, "BuildFailed");
    assert!(message.contains("idx-build-g3 failed"), "{message}");
    assert_eq!(failed["latestComplete"]["generation"], 1, "a failed build is never the one to serve");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status(&client, &ns, "SearchDeployment", "web").await;
    assert_eq!(s["loadedIndices"]["laion"], "idx@g1");
    assert_eq!(config().await["laion"]["indice_folder"], "s3://data/index/g1");

    // Generation 4 succeeds: the switch is to its own folder.
    rebuild(&client, &ns, json!({"FAKE_EXIT_CODE": "0", "FAKE_TERMINATION_MESSAGE": REPORT})).await;
    let s = serves("idx@g4").await;
    assert_eq!(condition(&s, "Ready")["status"], "True");
    assert_eq!(config().await["laion"]["indice_folder"], "s3://data/index/g4");

    // Old generations are pruned: g4 and g1 are the two finished ones kept (keepGenerations 2); a Job deletes the
    // rest (g2 stopped, g3 failed) with `prune_generations`.
    let built = status(&client, &ns, "IndexBuild", "idx").await;
    assert_eq!(built["retainedGenerations"], json!([4, 1]));
    let prune =
        wait_until(Duration::from_secs(30), "the prune Job", || async { jobs_api.get_opt("idx-prune-g4").await.ok()? })
            .await;
    let args = prune.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert_eq!(args, ["prune_generations", "--index_root", "s3://data/index", "--keep_generations", "4,1"]);
    assert!(event_reasons(&client, &ns, "idx").await.contains(&"PruningGenerations".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_args_the_cli_refuses_fail_the_resource_before_any_pod_is_created() {
    let (plane, client, ns) = setup("extraargs").await;
    let _operator = Operator::start(plane, &ns, "a");
    let spec = json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 2, "image": "clip-retrieval:test",
                      "extraArgs": ["--num_prepro_workers", "eight"]});
    create(&client, &ns, "EmbeddingJob", "typo", spec).await.unwrap();
    let failed = wait_phase(&client, &ns, "EmbeddingJob", "typo", "Failed", Duration::from_secs(30)).await;
    let (status_, reason, message) = cond(&failed, "Failed");
    assert_eq!((status_.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.contains(r#"extraArgs ["--num_prepro_workers", "eight"]: `clip-retrieval inference` refuses them"#)
            && message.contains("invalid value 'eight'"),
        "{message}"
    );
    assert!(jobs(&client, &ns).await.is_empty(), "a Job was created for a spec the CLI refuses");
    // Fixing the spec recovers: the check runs again on every spec edit.
    let patch = json!({"spec": {"extraArgs": ["--num_prepro_workers", "8"]}});
    custom(&client, &ns, "EmbeddingJob")
        .patch("typo", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    wait_phase(&client, &ns, "EmbeddingJob", "typo", "Complete", Duration::from_secs(60)).await;
}
