//! The Helm chart (`charts/clip-retrieval`): `helm lint --strict`, the rendered objects, the alert rules under
//! `promtool test rules`, and `helm install --wait` / `upgrade` / `uninstall` on the real control plane with the
//! operator running under the chart's ServiceAccount (so its RBAC is proven sufficient by a real API server).

use clip_retrieval_tests::kube::ops::*;
use clip_retrieval_tests::kube::{kube_bin, ControlPlane};
use clip_retrieval_tests::repo_root;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::Duration;

fn chart() -> String {
    repo_root().join("charts/clip-retrieval").display().to_string()
}

fn helm_here() -> Command {
    clip_retrieval_tests::kube::helm(&std::env::temp_dir().join(format!("clip-helm-{}", std::process::id())))
}

fn ok(output: Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

/// `helm template` with `--set` values, as parsed objects.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut cmd = helm_here();
    cmd.args(["template", "clip-retrieval", &chart(), "--namespace", "ops"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let text = ok(cmd.output().expect("helm"), "helm template");
    text.split("\n---").filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok()).filter(|v| v.is_object()).collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn the_chart_lints_clean_with_defaults_and_with_every_option() {
    let out = ok(helm_here().args(["lint", "--strict", &chart()]).output().unwrap(), "helm lint");
    assert!(out.contains("0 chart(s) failed"), "{out}");
    let all = "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true,operator.watchNamespace=search,crds.manage=true,networkPolicy.enabled=true,tests.searchDeployment=laion,tests.indexName=laion";
    let out = ok(helm_here().args(["lint", "--strict", &chart(), "--set", all]).output().unwrap(), "helm lint (all)");
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

/// `helm template` with `--set` values, expected to fail: its error text.
fn render_error(sets: &[&str]) -> String {
    let mut cmd = helm_here();
    cmd.args(["template", "clip-retrieval", &chart()]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm");
    assert!(!out.status.success(), "helm template {sets:?} passed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_values_schema_refuses_misspelled_and_mistyped_values() {
    let typo = render_error(&["operator.replica=3"]);
    assert!(typo.contains("operator: Additional property replica is not allowed"), "{typo}");
    let top = render_error(&["networkPolicies.enabled=true"]);
    assert!(top.contains("Additional property networkPolicies is not allowed"), "{top}");
    let mistyped = render_error(&["operator.replicas=two"]);
    assert!(mistyped.contains("operator.replicas: Invalid type. Expected: integer, given: string"), "{mistyped}");
    let policy = render_error(&["operator.image.pullPolicy=Sometimes"]);
    assert!(policy.contains("operator.image.pullPolicy"), "{policy}");
    let missing = render_error(&["tests.searchDeployment=laion"]);
    assert!(missing.contains("tests.indexName is required"), "{missing}");
    // Every key of values.yaml is in the schema (the defaults pass it, with additionalProperties false).
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("charts/clip-retrieval/values.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["additionalProperties"], false);
    render(&[]);
}

#[test]
fn pdb_network_policy_aggregated_roles_crds_and_the_test_hook_render_as_documented() {
    let objects = render(&[]);
    let selector = &find(&objects, "Deployment", "clip-retrieval-operator")["spec"]["selector"]["matchLabels"];
    let pdb = find(&objects, "PodDisruptionBudget", "clip-retrieval-operator");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *selector);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let single = render(&["operator.replicas=1"]);
    assert!(single.iter().all(|o| o["kind"] != "PodDisruptionBudget"), "one replica: a PDB would block drains");
    assert!(objects.iter().all(|o| o["kind"] != "NetworkPolicy" && o["kind"] != "CustomResourceDefinition"));
    assert!(objects.iter().all(|o| o["kind"] != "Pod"), "no helm test pod unless asked");

    let edit = find(&objects, "ClusterRole", "clip-retrieval-edit");
    assert_eq!(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"], "true");
    assert_eq!(edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"], "true");
    let view = find(&objects, "ClusterRole", "clip-retrieval-view");
    assert_eq!(view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"], "true");
    assert_eq!(view["rules"][0]["verbs"], json!(["get", "list", "watch"]));

    let options = render(&[
        "networkPolicy.enabled=true",
        "crds.manage=true",
        "tests.searchDeployment=laion",
        "tests.indexName=laion",
    ]);
    let policy = find(&options, "NetworkPolicy", "clip-retrieval-operator");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], *selector);
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8080);
    assert_eq!(
        policy["spec"]["egress"][0]["ports"],
        json!([{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}])
    );
    for file in ["embeddingjobs", "indexbuilds", "searchdeployments"] {
        let crd = find(&options, "CustomResourceDefinition", &format!("{file}.clip-retrieval.io"));
        assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
        let path = repo_root().join(format!("charts/clip-retrieval/crds/{file}.yaml"));
        let shipped: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(crd["spec"], shipped["spec"], "the template is crds/{file}.yaml");
    }
    let pod = find(&options, "Pod", "clip-retrieval-test-query");
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    let script = pod["spec"]["containers"][0]["args"][0].as_str().unwrap();
    assert!(script.contains("http://laion.ops.svc:1234/knn-service"), "{script}");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
}

/// The helm test pod's script, run here (GNU wget takes busybox's flags) against a real `back` serving a real
/// index: it succeeds on an index that answers and fails on one that does not exist.
#[test]
fn the_helm_test_query_succeeds_against_a_real_server_and_fails_on_a_wrong_index() {
    use clip_retrieval_tests::{cli, inference_command, run, sample_dataset, BackServer};
    let dir = tempfile::tempdir().unwrap();
    sample_dataset(&dir.path().join("data"), 60, 3, "files");
    let (data, emb, index) = (dir.path().join("data"), dir.path().join("emb"), dir.path().join("index"));
    run(&mut inference_command(&data, &emb, &["--enable_metadata", "True"]), true);
    run(
        cli().arg("index").arg("--embeddings_folder").arg(&emb).arg("--index_folder").arg(&index).arg("--no_progress"),
        true,
    );
    let paths = dir.path().join("indices_paths.json");
    std::fs::write(&paths, json!({"laion": index.display().to_string()}).to_string()).unwrap();
    let server = BackServer::start(&paths, &[]);
    let script_for = |index_name: &str| {
        let objects = render(&["tests.searchDeployment=laion", &format!("tests.indexName={index_name}")]);
        let pod = find(&objects, "Pod", "clip-retrieval-test-query");
        let script = pod["spec"]["containers"][0]["args"][0].as_str().unwrap().to_string();
        script.replace("http://laion.ops.svc:1234", &format!("http://127.0.0.1:{}", server.port))
    };
    let script = script_for("laion");
    let answered = Command::new("sh").args(["-c", &script]).output().unwrap();
    ok(answered, &format!("the helm test query `{script}`"));
    let wrong = Command::new("sh").args(["-c", &script_for("nope")]).output().unwrap();
    assert!(!wrong.status.success(), "a query to a missing index passed the helm test");
}

#[test]
fn the_rendered_chart_is_least_privilege_and_non_root() {
    let objects = render(&[]);
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service"]
    {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(
        !kinds.iter().any(|k| ["ServiceMonitor", "PodMonitor", "PrometheusRule"].contains(k)),
        "monitors are opt-in"
    );

    let role = find(&objects, "ClusterRole", "clip-retrieval-operator");
    let rules = role["rules"].as_array().unwrap();
    let verbs = |group: &str, resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r["apiGroups"].as_array().unwrap().iter().any(|g| g == group))
            .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource))
            .flat_map(|r| r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(verbs("clip-retrieval.io", "embeddingjobs"), ["get", "list", "watch"]);
    assert_eq!(verbs("", "pods"), ["get", "list", "watch"], "pods are only read");
    assert_eq!(
        verbs("batch", "jobs"),
        ["get", "list", "watch", "create", "patch", "delete"],
        "Jobs are deleted only to stop a failed resource's or a superseded generation's work"
    );
    assert!(verbs("", "secrets").is_empty(), "no access to Secrets");
    assert!(rules.iter().all(|r| !r["verbs"].as_array().unwrap().iter().any(|v| v == "*")), "no wildcard verbs");
    let lease = find(&objects, "Role", "clip-retrieval-operator-leader-election");
    assert_eq!(lease["metadata"]["namespace"], "ops");
    assert_eq!(lease["rules"][0]["resources"], json!(["leases"]));

    let deployment = find(&objects, "Deployment", "clip-retrieval-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "clip-retrieval-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/clip-retrieval-rs/clip-operator:0.1.0", "tag defaults to appVersion");
    assert_eq!(container["command"], json!(["clip-operator"]));
    assert_eq!(
        container["args"],
        json!(["--metrics-addr=0.0.0.0:8080", "--lease-duration-seconds=15", "--stuck-pod-timeout-seconds=600"])
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(deployment["spec"]["replicas"], 2);

    // One namespace: a Role there instead of the ClusterRole, and the operator told to watch only it.
    let scoped = render(&["operator.watchNamespace=search"]);
    assert!(
        scoped.iter().all(|o| o["kind"] != "ClusterRole"
            || o["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"].is_string()
            || o["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"].is_string()),
        "the operator gets no ClusterRole (only the users' aggregated roles are cluster-scoped)"
    );
    assert_eq!(find(&scoped, "Role", "clip-retrieval-operator")["metadata"]["namespace"], "search");
    let env =
        &find(&scoped, "Deployment", "clip-retrieval-operator")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(env.as_array().unwrap().iter().any(|e| e["name"] == "WATCH_NAMESPACE" && e["value"] == "search"));

    // Monitors: the ServiceMonitor selects the metrics Service; the PrometheusRule carries files/alerts.yaml.
    let monitored = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ]);
    let service = find(&monitored, "Service", "clip-retrieval-operator");
    let monitor = find(&monitored, "ServiceMonitor", "clip-retrieval-operator");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "ServiceMonitor selector {k}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let pods = find(&monitored, "PodMonitor", "clip-retrieval-query-servers");
    assert_eq!(pods["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "clip-retrieval-back");
    let rule = find(&monitored, "PrometheusRule", "clip-retrieval-alerts");
    let file: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("charts/clip-retrieval/files/alerts.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["spec"], file);
}

#[test]
fn the_alert_rules_are_valid_and_fire_as_their_unit_tests_say() {
    let promtool = kube_bin().join("promtool");
    let dir = repo_root().join("charts/clip-retrieval");
    let out = Command::new(&promtool).args(["check", "rules", "files/alerts.yaml"]).current_dir(&dir).output().unwrap();
    assert!(ok(out, "promtool check rules").contains("SUCCESS: 5 rules found"));
    let out =
        Command::new(&promtool).args(["test", "rules", "tests/alerts_test.yaml"]).current_dir(&dir).output().unwrap();
    ok(out, "promtool test rules");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installs_upgrades_and_uninstalls_and_the_operator_works_with_the_charts_rbac() {
    let plane = ControlPlane::shared();
    let client = plane.client().await;
    let ns = plane.namespace("helm").await;
    let install = plane
        .helm()
        .args(["install", "clip-retrieval", &chart(), "--namespace", &ns, "--wait", "--timeout", "120s"])
        .args(["--set", "operator.replicas=2", "--set", "networkPolicy.enabled=true"])
        .output()
        .unwrap();
    ok(install, "helm install");
    // The PDB (policy/v1beta1 on this 1.20 server) selects the operator's two pods: the disruption controller
    // counts them.
    let pdb = ApiResource::from_gvk(&GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget"));
    let pdbs = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &pdb);
    wait_until(Duration::from_secs(30), "the PDB counting the operator pods", || async {
        let p = pdbs.get_opt("clip-retrieval-operator").await.ok()??;
        (p.data["status"]["expectedPods"] == 2 && p.data["status"]["currentHealthy"] == 2).then_some(())
    })
    .await;
    let policies = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), &ns);
    assert!(policies.get_opt("clip-retrieval-operator").await.unwrap().is_some(), "NetworkPolicy not installed");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["embeddingjobs", "indexbuilds", "searchdeployments"] {
        assert!(
            crds.get_opt(&format!("{name}.clip-retrieval.io")).await.unwrap().is_some(),
            "CRD {name} not installed"
        );
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let operator = deployments.get("clip-retrieval-operator").await.unwrap();
    assert_eq!(operator.status.unwrap().ready_replicas, Some(2));
    namespace_users_get_the_resources_through_the_aggregated_roles(plane, &client, &ns).await;

    // The operator binary under the chart's ServiceAccount: every write it makes must be allowed by the chart.
    let kubeconfig = plane.service_account_kubeconfig(&ns, "clip-retrieval-operator").await;
    let running = Operator::start_as(plane, &kubeconfig, &ns, "chart");
    // The repository's examples, as a user applies them after creating the Secret they name (plus what the test
    // kubelet reads: run time, report).
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3-credentials"}, "stringData": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    }))
    .unwrap();
    Api::namespaced(client.clone(), &ns).create(&kube::api::PostParams::default(), &secret).await.unwrap();
    let fake = json!({"FAKE_RUN_SECONDS": "0.5",
                      "FAKE_TERMINATION_MESSAGE": r#"{"indices":{"image":{"index_key":"Flat","index_bytes":100,"recall_at_10":1.0,"count":4}}}"#});
    for (kind, file) in
        [("EmbeddingJob", "embeddingjob"), ("IndexBuild", "indexbuild"), ("SearchDeployment", "searchdeployment")]
    {
        let text = std::fs::read_to_string(repo_root().join("examples").join(format!("{file}.yaml"))).unwrap();
        let mut example: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(example["kind"], kind);
        for (k, v) in fake.as_object().unwrap() {
            example["spec"]["env"][k] = v.clone();
        }
        create(&client, &ns, kind, "laion", example["spec"].clone()).await.unwrap();
    }
    wait_phase(&client, &ns, "EmbeddingJob", "laion", "Complete", Duration::from_secs(60)).await;
    let built = wait_phase(&client, &ns, "IndexBuild", "laion", "Complete", Duration::from_secs(60)).await;
    assert_eq!(built["indexKey"], "Flat", "the operator read the pod's termination message");
    wait_until(Duration::from_secs(60), "SearchDeployment ready", || async {
        let s = status(&client, &ns, "SearchDeployment", "laion").await;
        (condition(&s, "Ready")["status"] == "True").then_some(())
    })
    .await;
    // Dropping autoscaling and the Ingress deletes them (the only deletes the chart grants).
    let patch = json!({"spec": {"autoscaling": null, "ingress": null, "replicas": 2}});
    custom(&client, &ns, "SearchDeployment")
        .patch("laion", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let hpa = ApiResource::from_gvk(&GroupVersionKind::gvk("autoscaling", "v2beta2", "HorizontalPodAutoscaler"));
    wait_until(Duration::from_secs(30), "HPA and Ingress removed", || async {
        let h = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &hpa).get_opt("laion").await.ok()?;
        let i = Api::<Ingress>::namespaced(client.clone(), &ns).get_opt("laion").await.ok()?;
        (h.is_none() && i.is_none()).then_some(())
    })
    .await;
    let log = running.log_text();
    assert!(!log.contains("forbidden"), "the chart's RBAC refused something:\n{log}");
    assert!(running.metrics().contains("clip_operator_leader 1"));

    let upgrade = plane
        .helm()
        .args(["upgrade", "clip-retrieval", &chart(), "--namespace", &ns, "--wait", "--timeout", "120s"])
        .args([
            "--set",
            "operator.replicas=3",
            "--set",
            "operator.logLevel=debug",
            "--set",
            "networkPolicy.enabled=true",
        ])
        .args(["--set", "tests.searchDeployment=laion", "--set", "tests.indexName=laion"])
        .output()
        .unwrap();
    ok(upgrade, "helm upgrade");
    let upgraded = deployments.get("clip-retrieval-operator").await.unwrap();
    assert_eq!(upgraded.spec.replicas, Some(3));
    assert_eq!(upgraded.status.unwrap().ready_replicas, Some(3));
    // `helm test` runs the query pod (the test kubelet runs no container: it proves the hook is installed and
    // awaited; the script itself runs against a real server in the_helm_test_query_succeeds_...).
    let tested =
        plane.helm().args(["test", "clip-retrieval", "--namespace", &ns, "--timeout", "60s"]).output().unwrap();
    let text = ok(tested, "helm test");
    assert!(text.contains("clip-retrieval-test-query") && text.contains("Succeeded"), "{text}");
    let env = upgraded.spec.template.spec.unwrap().containers[0].env.clone().unwrap();
    assert!(env.iter().any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")));

    ok(
        plane.helm().args(["uninstall", "clip-retrieval", "--namespace", &ns, "--wait"]).output().unwrap(),
        "helm uninstall",
    );
    wait_until(Duration::from_secs(30), "chart objects removed", || async {
        let d = deployments.get_opt("clip-retrieval-operator").await.ok()?;
        let sa =
            Api::<ServiceAccount>::namespaced(client.clone(), &ns).get_opt("clip-retrieval-operator").await.ok()?;
        let role = Api::<ClusterRole>::all(client.clone()).get_opt("clip-retrieval-operator").await.ok()?;
        (d.is_none() && sa.is_none() && role.is_none()).then_some(())
    })
    .await;
    assert!(crds.get_opt("embeddingjobs.clip-retrieval.io").await.unwrap().is_some(), "Helm keeps CRDs on uninstall");
}

#[test]
fn the_images_are_built_by_the_scripts_ci_runs_and_match_the_charts_commands() {
    let read = |f: &str| std::fs::read_to_string(repo_root().join("docker").join(f)).unwrap();
    for file in ["clip-retrieval.Dockerfile", "clip-retrieval-cuda.Dockerfile"] {
        let text = read(file);
        assert!(text.contains("bash scripts/setup.sh --build-only"), "{file} bypasses scripts/setup.sh");
        assert!(
            text.contains(&format!("ENTRYPOINT [\"{}\"]", clip_operator::pods::BINARY)),
            "{file}: the operator runs `clip-retrieval`"
        );
        assert!(text.contains("USER 10001"), "{file} runs as root");
    }
    assert!(read("clip-retrieval-cuda.Dockerfile").contains("ORT_PACKAGE=onnxruntime-gpu"));
    let operator = read("operator.Dockerfile");
    let rendered = render(&[]);
    let command = &find(&rendered, "Deployment", "clip-retrieval-operator")["spec"]["template"]["spec"]["containers"]
        [0]["command"][0];
    assert!(operator.contains(&format!("ENTRYPOINT [{command}]")), "the chart runs {command}");
    assert!(operator.contains("USER 10001"));
}

#[test]
fn the_grafana_dashboard_is_valid_promql_over_metrics_the_project_exports() {
    let objects = render(&["metrics.grafanaDashboard.enabled=true"]);
    let map = find(&objects, "ConfigMap", "clip-retrieval-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(map["data"]["clip-retrieval.json"].as_str().unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string()))
        .collect();
    assert!(exprs.len() >= 8);
    // promtool parses each expression (as a recording rule).
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> =
        exprs.iter().enumerate().map(|(i, e)| json!({"record": format!("dashboard:expr{i}"), "expr": e})).collect();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap())
        .unwrap();
    let out = Command::new(kube_bin().join("promtool")).arg("check").arg("rules").arg(&file).output().unwrap();
    ok(out, "promtool check rules (dashboard expressions)");
    // Every metric it reads is one the operator or the query server registers.
    let sources = ["operator/src/metrics.rs", "services/clip-server/src/metrics.rs"]
        .map(|f| std::fs::read_to_string(repo_root().join(f)).unwrap())
        .join("\n");
    for expr in &exprs {
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|t| t.starts_with("clip_")) {
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(sources.contains(&format!("\"{base}\"")), "the dashboard reads {name}, which nothing exports");
        }
    }
}

/// ServiceAccounts bound (RoleBinding) to the built-in `edit` and `view` roles: the chart's aggregated ClusterRoles
/// give the first create and delete, the second only reads, as the real API server's RBAC decides.
async fn namespace_users_get_the_resources_through_the_aggregated_roles(
    plane: &ControlPlane,
    admin: &kube::Client,
    ns: &str,
) {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), ns);
    for role in ["edit", "view"] {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": format!("user-{role}")}})).unwrap();
        accounts.create(&kube::api::PostParams::default(), &account).await.unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("user-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": format!("user-{role}"), "namespace": ns}]
        }))
        .unwrap();
        bindings.create(&kube::api::PostParams::default(), &binding).await.unwrap();
    }
    let as_user = |role: &'static str| async move {
        let path = plane.service_account_kubeconfig(ns, &format!("user-{role}")).await;
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&path).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let editor = as_user("edit").await;
    let spec = json!({"input": "/d", "output": "/o", "partitions": 1, "image": "i", "suspend": true});
    // The aggregation controller copies the rules into edit shortly after the chart's ClusterRoles appear.
    wait_until(Duration::from_secs(30), "edit may create an EmbeddingJob", || async {
        create(&editor, ns, "EmbeddingJob", "by-editor", spec.clone()).await.ok()
    })
    .await;
    let viewer = as_user("view").await;
    let listed = custom(&viewer, ns, "EmbeddingJob").list(&Default::default()).await.unwrap();
    assert!(listed.items.iter().any(|o| o.metadata.name.as_deref() == Some("by-editor")));
    let refused = create(&viewer, ns, "EmbeddingJob", "by-viewer", spec.clone()).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(e) if e.code == 403), "{refused}");
    custom(&editor, ns, "EmbeddingJob").delete("by-editor", &Default::default()).await.unwrap();
}
