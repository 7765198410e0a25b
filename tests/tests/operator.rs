//! The operator against a real control plane (kube-apiserver, controller-manager and scheduler v1.20.2, see
//! `clip_retrieval_tests::kube`): each resource's happy path with its children's specs, a failing partition
//! retried alone, an IndexBuild waiting on its EmbeddingJob, a SearchDeployment rolling to a new index, garbage
//! collection, two replicas with the leader killed mid-run, schema rejections, `/metrics` scraped by Prometheus, and
//! a SearchDeployment's PodDisruptionBudget.
//! Each test runs its own operator process in its own namespace.

use clip_retrieval_tests::kube::ops::*;
use clip_retrieval_tests::{free_port, http_get, wait_for_port};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_job_runs_its_partitions_in_parallel_to_completion() {
    let (plane, client, ns) = setup("ej").await;
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s3-creds"}, "stringData": {"AWS_ACCESS_KEY_ID": "k"}}))
            .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
    let _operator = Operator::start(plane, &ns, "a");
    let spec = json!({
        "input": "s3://data/shards/{000..003}.tar", "inputFormat": "webdataset", "output": "s3://data/emb",
        "model": "s3://models/tiny-clip", "batchSize": 64, "partitions": 5, "parallelism": 2, "retriesPerPartition": 2,
        "image": "clip-retrieval:test", "resources": {"gpu": 1, "cpu": "2", "memory": "4Gi"},
        "nodeSelector": {"kubernetes.io/hostname": "fake-node-1"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "env": {"AWS_ENDPOINT_URL": "http://s3.local:9000", "FAKE_RUN_SECONDS": "1.5"}, "envFromSecret": "s3-creds",
    });
    create(&client, &ns, "EmbeddingJob", "laion", spec).await.expect("create EmbeddingJob");

    // Never more than `parallelism` partitions at once, until every one is done.
    let start = Instant::now();
    let mut most_running = 0;
    let done = loop {
        let running = jobs(&client, &ns).await.iter().filter(|j| !is_finished(j)).count();
        most_running = most_running.max(running);
        let s = status(&client, &ns, "EmbeddingJob", "laion").await;
        if s["phase"] == "Complete" {
            break s;
        }
        assert!(s["phase"] != "Failed", "failed: {s}");
        assert!(start.elapsed() < Duration::from_secs(90), "not complete after 90 s: {s}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(most_running <= 2, "{most_running} partitions ran at once with parallelism 2");
    assert_eq!(most_running, 2, "parallelism 2 was never used");
    assert_eq!(done["partitionsSucceeded"], 5);
    assert_eq!(done["partitionsTotal"], 5);
    assert_eq!(done["succeededPartitionIds"], "0-4");
    assert_eq!(done["jobMode"], "JobPerPartition", "v1.20 has no per-index retry limits");
    assert_eq!(done["observedGeneration"], 1);
    assert!(done["startTime"].is_string() && done["completionTime"].is_string());
    assert_eq!(condition(&done, "Complete")["status"], "True");
    assert_eq!(condition(&done, "Progressing")["status"], "False");

    // One Job per partition, with the inference command line, placement and owner.
    let all = jobs(&client, &ns).await;
    let mut names: Vec<String> = all.iter().map(|j| j.name_any()).collect();
    names.sort();
    assert_eq!(names, ["laion-p0", "laion-p1", "laion-p2", "laion-p3", "laion-p4"]);
    let job = all.iter().find(|j| j.name_any() == "laion-p3").unwrap();
    let owner = &job.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("EmbeddingJob", "laion", Some(true)));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.node_selector.as_ref().unwrap()["kubernetes.io/hostname"], "fake-node-1");
    assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("nvidia.com/gpu"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("clip-retrieval:test"));
    assert_eq!(c.command.as_deref(), Some(&["clip-retrieval".to_string()][..]));
    let args = c.args.clone().unwrap().join(" ");
    assert_eq!(
        args,
        "inference --input_dataset s3://data/shards/{000..003}.tar --input_format webdataset --output_folder s3://data/emb \
         --output_partition_count 5 --partition_ids 3 --batch_size 64 --enable_metadata true --no_progress \
         --clip_model s3://models/tiny-clip --device cuda"
    );
    let limits = c.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(
        (limits["nvidia.com/gpu"].0.as_str(), limits["cpu"].0.as_str(), limits["memory"].0.as_str()),
        ("1", "2", "4Gi")
    );
    let env = c.env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "AWS_ENDPOINT_URL" && e.value.as_deref() == Some("http://s3.local:9000")));
    assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3-creds");
    // Each partition ran exactly once.
    for p in 0..5 {
        assert_eq!(
            pods_with(&client, &ns, &format!("clip-retrieval.io/partition={p}")).await.len(),
            1,
            "partition {p}"
        );
    }
    let reasons = event_reasons(&client, &ns, "laion").await;
    assert!(reasons.contains(&"Running".to_string()) && reasons.contains(&"Complete".to_string()), "{reasons:?}");

    // Deleting the resource removes its Jobs (owner references, the controller-manager's garbage collector).
    custom(&client, &ns, "EmbeddingJob").delete("laion", &DeleteParams::foreground()).await.unwrap();
    wait_until(Duration::from_secs(60), "Jobs garbage-collected", || async {
        jobs(&client, &ns).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_is_retried_alone_then_fails_the_job_with_its_message() {
    let (plane, client, ns) = setup("fail").await;
    let operator = Operator::start(plane, &ns, "a");
    let spec = json!({
        "input": "/data/in", "output": "/data/out", "partitions": 3, "parallelism": 3, "retriesPerPartition": 1,
        "image": "clip-retrieval:test",
        "env": {"FAKE_RUN_SECONDS": "0.5", "FAKE_FAIL_PARTITIONS": "1", "FAKE_EXIT_CODE": "3",
                "FAKE_TERMINATION_MESSAGE": "decoding /data/in/00001.jpg: invalid JPEG marker\nmore detail"},
    });
    create(&client, &ns, "EmbeddingJob", "bad", spec).await.unwrap();
    let failed = wait_phase(&client, &ns, "EmbeddingJob", "bad", "Failed", Duration::from_secs(120)).await;
    let message = condition(&failed, "Failed")["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("partition 1") && message.contains("exited with code 3"),
        "{message} ({})",
        operator.log_text()
    );
    assert!(message.contains("invalid JPEG marker") && !message.contains("more detail"), "{message}");
    assert_eq!(failed["partitionsSucceeded"], 2);
    assert_eq!(failed["partitionsFailed"], 1);
    assert_eq!(failed["succeededPartitionIds"], "0,2");
    // Partition 1 ran twice (one retry); the others once.
    assert_eq!(pods_with(&client, &ns, "clip-retrieval.io/partition=1").await.len(), 2);
    assert_eq!(pods_with(&client, &ns, "clip-retrieval.io/partition=0").await.len(), 1);
    assert_eq!(pods_with(&client, &ns, "clip-retrieval.io/partition=2").await.len(), 1);
    let reasons = event_reasons(&client, &ns, "bad").await;
    assert!(reasons.contains(&"PartitionFailed".to_string()) && reasons.contains(&"Failed".to_string()), "{reasons:?}");
}

const BUILD_REPORT: &str = r#"{"indices":{"image":{"index_key":"IVF16,Flat","index_bytes":90000,"recall_at_10":0.96,"count":400},"text":{"index_key":"Flat","index_bytes":20000,"recall_at_10":1.0,"count":400}},"metadata_rows":400}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_build_waits_for_its_embeddings_and_a_search_deployment_rolls_to_each_new_index() {
    let (plane, client, ns) = setup("search").await;
    let operator = Operator::start(plane, &ns, "a");
    // The IndexBuild exists before its EmbeddingJob: it waits.
    let build_spec = json!({
        "embeddings": {"embeddingJob": "emb"}, "output": "s3://data/index", "maxIndexMemoryUsage": "1G",
        "modalities": ["image", "text"], "image": "clip-retrieval:test", "resources": {"memory": "8Gi"},
        "env": {"FAKE_TERMINATION_MESSAGE": BUILD_REPORT},
    });
    create(&client, &ns, "IndexBuild", "idx", build_spec).await.unwrap();
    let waiting = wait_phase(&client, &ns, "IndexBuild", "idx", "Waiting", Duration::from_secs(30)).await;
    assert!(condition(&waiting, "Progressing")["message"]
        .as_str()
        .unwrap()
        .contains("EmbeddingJob emb does not exist"));
    let search_spec = json!({
        "indices": {"laion": {"indexBuild": "idx"}}, "image": "clip-retrieval:test", "port": 8080,
        "model": "s3://models/tiny-clip", "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCpuUtilization": 60},
        "ingress": {"host": "search.example.com", "path": "/", "className": "nginx", "tlsSecretName": "search-tls"},
        "resources": {"cpu": "1", "memory": "2Gi"},
    });
    create(&client, &ns, "SearchDeployment", "web", search_spec).await.unwrap();
    let emb = json!({"input": "/data/in", "output": "s3://data/emb", "partitions": 2, "parallelism": 2,
                     "image": "clip-retrieval:test", "env": {"FAKE_RUN_SECONDS": "2"}});
    create(&client, &ns, "EmbeddingJob", "emb", emb).await.unwrap();
    wait_phase(&client, &ns, "EmbeddingJob", "emb", "Running", Duration::from_secs(30)).await;
    let waiting = status(&client, &ns, "IndexBuild", "idx").await;
    assert_eq!(waiting["phase"], "Waiting", "{waiting}");
    assert!(jobs(&client, &ns).await.iter().all(|j| !j.name_any().starts_with("idx-")), "built before its embeddings");
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("web").await.unwrap().is_none());

    // Embeddings done -> the build runs with the EmbeddingJob's output and reports the index.
    wait_phase(&client, &ns, "EmbeddingJob", "emb", "Complete", Duration::from_secs(60)).await;
    let built = wait_phase(&client, &ns, "IndexBuild", "idx", "Complete", Duration::from_secs(60)).await;
    assert_eq!(built["indexKey"], "IVF16,Flat");
    assert_eq!(built["recallAt10"], 0.96);
    assert_eq!(built["vectors"], 400);
    assert_eq!(built["indexBytes"], 110000);
    assert_eq!(built["jobName"], "idx-build-g1");
    let job = Api::<Job>::namespaced(client.clone(), &ns).get("idx-build-g1").await.unwrap();
    let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        c.args.clone().unwrap().join(" "),
        "index --embeddings_folder s3://data/emb --index_folder s3://data/index/g1 --max_index_memory_usage 1G \
         --modalities image,text --report_path /dev/termination-log --no_progress --current_memory_available 8G"
    );
    assert_eq!(c.termination_message_path.as_deref(), Some("/dev/termination-log"));

    // The SearchDeployment's children.
    let first = wait_until(Duration::from_secs(60), "SearchDeployment ready", || async {
        let s = status(&client, &ns, "SearchDeployment", "web").await;
        (condition(&s, "Ready")["status"] == "True" && s["readyReplicas"] == 1).then_some(s)
    })
    .await;
    assert_eq!(built["latestComplete"]["folder"], "s3://data/index/g1");
    assert_eq!(built["latestComplete"]["completionTime"], built["completionTime"]);
    let version = "idx@g1".to_string();
    assert_eq!(first["loadedIndices"]["laion"], version.as_str());
    assert_eq!(first["endpoint"], format!("https://search.example.com/ (http://web.{ns}.svc:8080)"));
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns).get("web").await.unwrap();
    assert_eq!(deployment.owner_references()[0].kind, "SearchDeployment");
    assert_eq!(deployment.spec.replicas, Some(1), "the HPA's minimum, the Deployment's default");
    let template = deployment.spec.template.clone();
    let pod = template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.args.clone().unwrap().join(" "),
        "back --indices_paths /etc/clip-retrieval/indices_paths.json --port 8080 --clip_model s3://models/tiny-clip"
    );
    assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/etc/clip-retrieval");
    assert_eq!(
        template.metadata.unwrap().annotations.unwrap()["clip-retrieval.io/index-versions"],
        format!("laion={version}")
    );
    let config = Api::<ConfigMap>::namespaced(client.clone(), &ns).get("web-indices").await.unwrap();
    let paths: Value = serde_json::from_str(&config.data.unwrap()["indices_paths.json"]).unwrap();
    assert_eq!(paths, json!({"laion": {"indice_folder": "s3://data/index/g1", "require_completion_marker": true}}));
    let service = Api::<Service>::namespaced(client.clone(), &ns).get("web").await.unwrap();
    assert_eq!(service.spec.unwrap().ports.unwrap()[0].port, 8080);
    let hpa_resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler"));
    let hpa = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &hpa_resource).get("web").await.unwrap();
    assert_eq!(
        (hpa.data["spec"]["minReplicas"].clone(), hpa.data["spec"]["maxReplicas"].clone()),
        (json!(1), json!(3))
    );
    assert_eq!(hpa.data["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60);
    let ingress = Api::<Ingress>::namespaced(client.clone(), &ns).get("web").await.unwrap().spec.unwrap();
    assert_eq!(ingress.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(ingress.rules.unwrap()[0].host.as_deref(), Some("search.example.com"));
    assert_eq!(ingress.tls.unwrap()[0].secret_name.as_deref(), Some("search-tls"));

    // A new IndexBuild spec builds again; the deployment rolls to the new index.
    let patch = json!({"spec": {"maxIndexMemoryUsage": "2G"}});
    custom(&client, &ns, "IndexBuild").patch("idx", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let rebuilt = wait_until(Duration::from_secs(60), "second build", || async {
        let s = status(&client, &ns, "IndexBuild", "idx").await;
        (s["phase"] == "Complete" && s["jobName"] == "idx-build-g2").then_some(s)
    })
    .await;
    assert_eq!(rebuilt["latestComplete"]["folder"], "s3://data/index/g2");
    let second = "idx@g2".to_string();
    assert_ne!(second, version);
    let rolled = wait_until(Duration::from_secs(60), "rolled to the new index", || async {
        let s = status(&client, &ns, "SearchDeployment", "web").await;
        (s["loadedIndices"]["laion"] == second.as_str() && condition(&s, "Ready")["status"] == "True").then_some(s)
    })
    .await;
    assert_eq!(rolled["readyReplicas"], 1);
    let serving = |pods: Vec<Pod>| -> Vec<String> {
        let live = pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none());
        live.filter_map(|p| p.annotations().get("clip-retrieval.io/index-versions").cloned()).collect()
    };
    let annotations = serving(pods_with(&client, &ns, "clip-retrieval.io/search-deployment=web").await);
    assert_eq!(annotations, [format!("laion={second}")], "old pods still serving");
    assert!(event_reasons(&client, &ns, "web").await.iter().filter(|r| *r == "RolledOut").count() >= 2);

    // Deleting the SearchDeployment removes every child.
    custom(&client, &ns, "SearchDeployment").delete("web", &DeleteParams::foreground()).await.unwrap();
    wait_until(Duration::from_secs(60), "children garbage-collected", || async {
        let d = Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("web").await.ok()?;
        let s = Api::<Service>::namespaced(client.clone(), &ns).get_opt("web").await.ok()?;
        let c = Api::<ConfigMap>::namespaced(client.clone(), &ns).get_opt("web-indices").await.ok()?;
        let i = Api::<Ingress>::namespaced(client.clone(), &ns).get_opt("web").await.ok()?;
        let h = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &hpa_resource).get_opt("web").await.ok()?;
        (d.is_none() && s.is_none() && c.is_none() && i.is_none() && h.is_none()).then_some(())
    })
    .await;
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leads_and_killing_it_mid_run_converges_without_duplicates() {
    let (plane, client, ns) = setup("leader").await;
    let mut a = Operator::start(plane, &ns, "a");
    let mut b = Operator::start(plane, &ns, "b");
    wait_until(Duration::from_secs(20), "a leader", || async { (a.is_leader() || b.is_leader()).then_some(()) }).await;
    assert!(!(a.is_leader() && b.is_leader()), "two leaders");
    let spec = json!({"input": "/data/in", "output": "/data/out", "partitions": 6, "parallelism": 2,
                      "image": "clip-retrieval:test", "env": {"FAKE_RUN_SECONDS": "2"}});
    create(&client, &ns, "EmbeddingJob", "big", spec).await.unwrap();
    wait_until(Duration::from_secs(60), "some partitions done", || async {
        let s = status(&client, &ns, "EmbeddingJob", "big").await;
        (s["partitionsSucceeded"].as_u64().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    let (leader, follower) = if a.is_leader() { (&mut a, &mut b) } else { (&mut b, &mut a) };
    leader.kill();
    let mid = status(&client, &ns, "EmbeddingJob", "big").await;
    assert_ne!(mid["phase"], "Complete", "killed too late to test anything: {mid}");
    wait_until(Duration::from_secs(30), "the follower takes over", || async { follower.is_leader().then_some(()) })
        .await;
    let done = wait_phase(&client, &ns, "EmbeddingJob", "big", "Complete", Duration::from_secs(90)).await;
    assert_eq!(done["succeededPartitionIds"], "0-5");
    let mut names: Vec<String> = jobs(&client, &ns).await.iter().map(|j| j.name_any()).collect();
    names.sort();
    assert_eq!(names, ["big-p0", "big-p1", "big-p2", "big-p3", "big-p4", "big-p5"]);
    for p in 0..6 {
        assert_eq!(
            pods_with(&client, &ns, &format!("clip-retrieval.io/partition={p}")).await.len(),
            1,
            "partition {p} ran twice"
        );
    }
    // The killed replica restarts as a follower while the other holds the Lease.
    let restarted = Operator::start(plane, &ns, "a-restarted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!restarted.is_leader() && follower.is_leader(), "leadership moved without cause");
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("clip-operator")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_run_and_restarted_converges_without_duplicates() {
    let (plane, client, ns) = setup("restart").await;
    let mut operator = Operator::start(plane, &ns, "solo");
    let spec = json!({"input": "/data/in", "output": "/data/out", "partitions": 5, "parallelism": 2,
                      "image": "clip-retrieval:test", "env": {"FAKE_RUN_SECONDS": "1.5"}});
    create(&client, &ns, "EmbeddingJob", "resume", spec).await.unwrap();
    wait_until(Duration::from_secs(60), "a partition done", || async {
        let s = status(&client, &ns, "EmbeddingJob", "resume").await;
        (s["partitionsSucceeded"].as_u64().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    operator.kill();
    // Partitions finish while no operator watches; the restarted one picks up from the cluster's state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = status(&client, &ns, "EmbeddingJob", "resume").await;
    assert_ne!(stalled["phase"], "Complete", "{stalled}");
    let _restarted = Operator::start(plane, &ns, "solo");
    let done = wait_phase(&client, &ns, "EmbeddingJob", "resume", "Complete", Duration::from_secs(90)).await;
    assert_eq!(done["succeededPartitionIds"], "0-4");
    assert_eq!(jobs(&client, &ns).await.len(), 5, "duplicate Jobs");
    for p in 0..5 {
        let runs = pods_with(&client, &ns, &format!("clip-retrieval.io/partition={p}")).await.len();
        assert_eq!(runs, 1, "partition {p} ran {runs} times");
    }
    // The same identity takes its own Lease back at once: no leader change was recorded.
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("clip-operator")
        .await
        .unwrap();
    assert_eq!(lease.spec.unwrap().lease_transitions, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_rejected_by_the_schema_or_reported_in_a_condition() {
    let (plane, client, ns) = setup("schema").await;
    let _operator = Operator::start(plane, &ns, "a");
    let message = |r: Result<DynamicObject, kube::Error>| match r {
        Err(kube::Error::Api(e)) => (e.code, e.message),
        other => panic!("accepted: {other:?}"),
    };
    let (code, text) = message(
        create(
            &client,
            &ns,
            "SearchDeployment",
            "neg",
            json!({"indices": {"a": {"uri": "s3://x"}}, "image": "i", "replicas": -1}),
        )
        .await,
    );
    assert_eq!(code, 422);
    assert!(text.contains("spec.replicas") && text.contains("should be greater than or equal to 0"), "{text}");
    let (_, text) = message(
        create(
            &client,
            &ns,
            "EmbeddingJob",
            "zip",
            json!({"input": "a", "output": "b", "partitions": 1, "image": "i", "inputFormat": "zip"}),
        )
        .await,
    );
    assert!(text.contains("spec.inputFormat") && text.contains("Unsupported value: \"zip\""), "{text}");
    let (_, text) = message(
        create(&client, &ns, "EmbeddingJob", "nopart", json!({"input": "a", "output": "b", "image": "i"})).await,
    );
    assert!(text.contains("spec.partitions: Required value"), "{text}");
    let (_, text) = message(
        create(
            &client,
            &ns,
            "IndexBuild",
            "mem",
            json!({"embeddings": {"uri": "a"}, "output": "b", "image": "i", "maxIndexMemoryUsage": "lots"}),
        )
        .await,
    );
    assert!(text.contains("spec.maxIndexMemoryUsage"), "{text}");

    // What the schema cannot say comes back as a Failed condition.
    create(
        &client,
        &ns,
        "IndexBuild",
        "both",
        json!({"embeddings": {"uri": "a", "embeddingJob": "e"}, "output": "b", "image": "i"}),
    )
    .await
    .unwrap();
    let failed = wait_phase(&client, &ns, "IndexBuild", "both", "Failed", Duration::from_secs(30)).await;
    assert_eq!(condition(&failed, "Failed")["reason"], "InvalidSpec");
    assert!(condition(&failed, "Failed")["message"].as_str().unwrap().contains("exactly one of embeddingJob and uri"));
    let spec =
        json!({"indices": {"a": {"uri": "s3://x"}}, "image": "i", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}});
    create(&client, &ns, "SearchDeployment", "range", spec).await.unwrap();
    let s = wait_until(Duration::from_secs(30), "InvalidSpec condition", || async {
        let s = status(&client, &ns, "SearchDeployment", "range").await;
        (condition(&s, "Failed")["status"] == "True").then_some(s)
    })
    .await;
    assert!(condition(&s, "Failed")["message"].as_str().unwrap().contains("minReplicas (5) is above maxReplicas (2)"));
    assert!(Api::<Deployment>::namespaced(client.clone(), &ns).get_opt("range").await.unwrap().is_none());
    assert!(event_reasons(&client, &ns, "both").await.contains(&"Failed".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_by_prometheus_and_pass_promtool() {
    let (plane, client, ns) = setup("metrics").await;
    let operator = Operator::start(plane, &ns, "a");
    create(&client, &ns, "EmbeddingJob", "m", json!({"input": "a", "output": "b", "partitions": 1, "image": "i"}))
        .await
        .unwrap();
    wait_phase(&client, &ns, "EmbeddingJob", "m", "Complete", Duration::from_secs(60)).await;
    let (code, health) = http_get(operator.port, "/healthz").unwrap();
    assert_eq!((code, health.as_str()), (200, "ok"));
    let text = operator.metrics();
    assert!(text.contains("clip_operator_reconciles_total{kind=\"EmbeddingJob\"}"), "{text}");
    assert!(text.contains("clip_operator_reconcile_duration_seconds_bucket{kind=\"EmbeddingJob\""), "{text}");

    // promtool's linter accepts the exposition.
    let bin = clip_retrieval_tests::kube::kube_bin();
    let mut lint = Command::new(bin.join("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(lint.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it.
    let dir = plane.dir.join(format!("prometheus-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs: [{{job_name: clip-operator, static_configs: [{{targets: [\"127.0.0.1:{}\"]}}]}}]\n",
        operator.port
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut prometheus = Command::new(bin.join("prometheus"))
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(30));
    let query = |q: &str| {
        let url = format!("http://127.0.0.1:{port}/api/v1/query?query={q}");
        reqwest::get(url)
    };
    let sample = wait_until(Duration::from_secs(30), "Prometheus to scrape the operator", || async {
        let body: Value = query("clip_operator_reconciles_total").await.ok()?.json().await.ok()?;
        let result = body["data"]["result"].as_array()?.iter().find(|r| r["metric"]["kind"] == "EmbeddingJob")?.clone();
        Some(result)
    })
    .await;
    assert_eq!(sample["metric"]["job"], "clip-operator");
    assert!(sample["value"][1].as_str().unwrap().parse::<f64>().unwrap() >= 1.0);
    let up: Value = query("up").await.unwrap().json().await.unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_deployment_keeps_its_query_pods_under_a_disruption_budget() {
    let (plane, client, ns) = setup("pdb").await;
    let _operator = Operator::start(plane, &ns, "a");
    let spec = json!({"indices": {"a": {"uri": "s3://x"}}, "image": "clip-retrieval:test", "replicas": 2,
                      "podDisruptionBudget": {"minAvailable": 1}});
    create(&client, &ns, "SearchDeployment", "web", spec).await.unwrap();
    // policy/v1beta1 on this 1.20 server; the disruption controller counts the pods the budget selects.
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget"));
    let pdbs = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
    let pdb = wait_until(Duration::from_secs(60), "the PDB counting both query pods", || async {
        let p = pdbs.get_opt("web").await.ok()??;
        (p.data["status"]["expectedPods"] == 2 && p.data["status"]["disruptionsAllowed"] == 1).then_some(p)
    })
    .await;
    assert_eq!(pdb.data["spec"]["minAvailable"], 1);
    assert_eq!(pdb.metadata.owner_references.as_ref().unwrap()[0].kind, "SearchDeployment");
    let both = json!({"spec": {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}});
    custom(&client, &ns, "SearchDeployment").patch("web", &PatchParams::default(), &Patch::Merge(&both)).await.unwrap();
    let invalid = wait_until(Duration::from_secs(30), "InvalidSpec", || async {
        let s = status(&client, &ns, "SearchDeployment", "web").await;
        (condition(&s, "Failed")["reason"] == "InvalidSpec").then_some(s)
    })
    .await;
    assert_eq!(
        condition(&invalid, "Failed")["message"],
        "spec.podDisruptionBudget needs exactly one of minAvailable and maxUnavailable"
    );
    let dropped = json!({"spec": {"podDisruptionBudget": null}});
    custom(&client, &ns, "SearchDeployment")
        .patch("web", &PatchParams::default(), &Patch::Merge(&dropped))
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the PDB deleted", || async {
        pdbs.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
}
