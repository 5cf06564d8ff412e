//! Deployment, tested: a Kubernetes ConfigMap update (the kubelet's atomic swap of the `..data`
//! symlink) reloads rekey; SIGHUP (systemd's `ExecReload`) reloads rekey; the example manifests
//! under `config/deploy/kubernetes/` validate against the Kubernetes schemas
//! (`kubernetes-validate`, which carries them offline) and agree with the rekey config they
//! mount; `config/deploy/rekey.service` passes `systemd-analyze verify`.

use crate::common::{free_port, http, scratch_dir, RedisServer, Rekey};
use redis::Commands;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Polls `f` every 20 ms until it holds, for at most 10 s (a hang guard, not a timing
/// assertion).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/status` as JSON.
fn status(admin_port: u16) -> serde_json::Value {
    let (code, body) = http(admin_port, "GET", "/status");
    assert_eq!(code, 200, "/status answered {code}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn generation(admin_port: u16) -> u64 {
    status(admin_port)["config"]["generation"].as_u64().unwrap()
}

fn config_text(port: u16, admin_port: u16, upstream: &str, prefix: &str) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin_port}\"\nupstream = \"{upstream}\"\n\n\
         [[rules]]\nname = \"sessions\"\nmatch = '^AppA_'\nreplace = '{prefix}'\n"
    )
}

/// True when a key written through rekey as `AppA_<probe>` lands upstream as `<prefix><probe>`.
fn rule_in_force(
    proxy: &mut redis::Connection,
    direct: &mut redis::Connection,
    prefix: &str,
    probe: &str,
) -> bool {
    let _: () = proxy.set(format!("AppA_{probe}"), 1).unwrap();
    direct.exists(format!("{prefix}{probe}")).unwrap()
}

fn wait_for_port(port: u16) {
    eventually(&format!("rekey listening on {port}"), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A rekey process started with `-c <path>` (a path the test lays out itself), killed on drop.
struct RekeyProcess(Child);

impl RekeyProcess {
    fn start(config: &Path, port: u16, admin_port: u16) -> RekeyProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .arg("-c")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("REKEY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let p = RekeyProcess(child);
        wait_for_port(port);
        wait_for_port(admin_port);
        p
    }
}

impl Drop for RekeyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory laid out as the kubelet lays out a mounted ConfigMap (or Secret):
/// `dir/..<timestamp>/rekey.toml`, `dir/..data -> ..<timestamp>`,
/// `dir/rekey.toml -> ..data/rekey.toml`.
struct ConfigMapDir {
    dir: PathBuf,
    current: String,
    n: u32,
}

impl ConfigMapDir {
    fn new(text: &str) -> ConfigMapDir {
        let dir = scratch_dir("configmap");
        let mut m = ConfigMapDir {
            dir,
            current: String::new(),
            n: 0,
        };
        let first = m.write_version(text);
        std::os::unix::fs::symlink(&first, m.dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/rekey.toml", m.dir.join("rekey.toml")).unwrap();
        m.current = first;
        m
    }

    fn path(&self) -> PathBuf {
        self.dir.join("rekey.toml")
    }

    fn write_version(&mut self, text: &str) -> String {
        self.n += 1;
        let name = format!("..2026_12_02_10_00_{:02}.{:09}", self.n, 100_000 + self.n);
        std::fs::create_dir(self.dir.join(&name)).unwrap();
        std::fs::write(self.dir.join(&name).join("rekey.toml"), text).unwrap();
        name
    }

    /// An update as the kubelet's atomic writer does it: a new timestamped directory,
    /// `..data_tmp` pointing at it, `..data_tmp` renamed over `..data`, the old directory
    /// removed. `rekey.toml` itself is never written.
    fn swap(&mut self, text: &str) {
        let new = self.write_version(text);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.join(&self.current)).unwrap();
        self.current = new;
    }
}

impl Drop for ConfigMapDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn configmap_symlink_swap_reloads() {
    let redis = RedisServer::start();
    let (port, admin_port) = (free_port(), free_port());
    let mut cm = ConfigMapDir::new(&config_text(port, admin_port, &redis.url(), "v1_"));
    assert!(std::fs::symlink_metadata(cm.path())
        .unwrap()
        .file_type()
        .is_symlink());
    let _rekey = RekeyProcess::start(&cm.path(), port, admin_port);
    let mut proxy = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let mut direct = redis.direct();
    assert!(rule_in_force(&mut proxy, &mut direct, "v1_", "start"));

    // Twice in a row: the second swap replaces the directory the first one put in place.
    for (i, prefix) in ["v2_", "v3_"].into_iter().enumerate() {
        let before = generation(admin_port);
        cm.swap(&config_text(port, admin_port, &redis.url(), prefix));
        eventually(&format!("reload after ConfigMap swap {}", i + 1), || {
            generation(admin_port) > before
        });
        let st = status(admin_port);
        assert_eq!(st["reload"]["last_result"], "ok", "{st}");
        let probe = format!("swap{i}");
        eventually(&format!("rule {prefix} in force"), || {
            rule_in_force(&mut proxy, &mut direct, prefix, &probe)
        });
    }

    // A broken ConfigMap is refused, and the last good rules keep serving.
    let before = generation(admin_port);
    cm.swap("listen = [not toml\n");
    eventually("the broken config refused", || {
        status(admin_port)["reload"]["last_result"] == "error"
    });
    assert_eq!(generation(admin_port), before);
    assert!(rule_in_force(&mut proxy, &mut direct, "v3_", "after-bad"));
}

#[test]
fn sighup_reloads() {
    let redis = RedisServer::start();
    let rekey = Rekey::start(
        &redis,
        "[[rules]]\nname = \"sessions\"\nmatch = '^AppA_'\nreplace = 'v1_'\n",
    );
    let mut proxy = rekey.client();
    let mut direct = redis.direct();
    assert!(rule_in_force(&mut proxy, &mut direct, "v1_", "start"));

    // Nothing changed on disk, so only the signal can make a new generation.
    let before = generation(rekey.admin_port);
    rekey.signal("HUP");
    eventually("a reload on SIGHUP", || {
        generation(rekey.admin_port) > before
    });

    // The file changed, then SIGHUP (what `systemctl reload rekey` does): the new rule serves.
    let text = std::fs::read_to_string(&rekey.config_path).unwrap();
    std::fs::write(&rekey.config_path, text.replace("'v1_'", "'v2_'")).unwrap();
    rekey.signal("HUP");
    eventually("the new rule after SIGHUP", || {
        rule_in_force(&mut proxy, &mut direct, "v2_", "hup")
    });
    assert_eq!(
        status(rekey.admin_port)["reload"]["last_result"],
        "ok",
        "the reload succeeded"
    );
}

/// The Python that has `kubernetes_validate`: `target/pyenv/bin/python` (where
/// `tests/setup.sh` installs it when the system Python refuses), else `python3`.
fn python() -> PathBuf {
    let venv = repo().join("target/pyenv/bin/python");
    for p in [venv, PathBuf::from("python3")] {
        let ok = Command::new(&p)
            .args(["-c", "import kubernetes_validate, yaml"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return p;
        }
    }
    panic!("kubernetes-validate is not installed: run tests/setup.sh");
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    eprintln!(
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn validate(python: &Path, files: &[PathBuf]) -> Output {
    run(Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "--no-warn"])
        .args(files))
}

fn manifests() -> Vec<PathBuf> {
    let dir = repo().join("config/deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "manifests in {}", dir.display());
    files
}

/// Every document of every manifest, as JSON.
fn documents(python: &Path, files: &[PathBuf]) -> Vec<serde_json::Value> {
    let out = run(Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml\n\
             print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))",
        ])
        .args(files));
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The port number a container exposes under `name`.
fn container_port(container: &serde_json::Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("port {name} in {container}"))["containerPort"]
        .as_u64()
        .unwrap()
}

/// The host:port of a `key = "…"` line of a rekey config.
fn config_addr(toml: &str, key: &str) -> String {
    toml.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.split('"').nth(1).unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("{key} in the config"))
}

#[test]
fn kubernetes_manifests_validate() {
    let python = python();
    let files = manifests();
    let out = validate(&python, &files);
    assert!(out.status.success(), "the manifests validate");

    // The validator does reject what is wrong: a misspelt field, and a port that is no number.
    let scratch = scratch_dir("k8s");
    let deployment =
        std::fs::read_to_string(repo().join("config/deploy/kubernetes/deployment.yaml")).unwrap();
    for (what, from, to) in [
        ("misspelt field", "readinessProbe:", "readinesProbe:"),
        ("port as text", "containerPort: 6380", "containerPort: six"),
    ] {
        assert!(deployment.contains(from), "{from} in deployment.yaml");
        let broken = scratch.join("broken.yaml");
        std::fs::write(&broken, deployment.replacen(from, to, 1)).unwrap();
        let out = validate(&python, &[broken]);
        assert!(!out.status.success(), "a {what} must fail validation");
    }
    let _ = std::fs::remove_dir_all(&scratch);

    // What the manifests promise, checked against the rekey config they mount.
    let docs = documents(&python, &files);
    let configs: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
    let deployments: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert!(docs.iter().any(|d| d["kind"] == "Service"));
    assert_eq!(deployments.len(), 2, "standalone and sidecar");
    let mut sidecar_seen = false;
    for d in deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = &d["spec"]["template"];
        let ann = &pod["metadata"]["annotations"];
        assert_eq!(
            ann["prometheus.io/scrape"], "true",
            "{name}: scrape annotation"
        );
        assert_eq!(ann["prometheus.io/path"], "/metrics", "{name}");
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
        // rekey runs as a plain container, or as a native sidecar (an init container that
        // keeps running).
        let all: Vec<&serde_json::Value> = ["containers", "initContainers"]
            .iter()
            .flat_map(|k| spec[*k].as_array().into_iter().flatten())
            .collect();
        let rekey = all
            .iter()
            .find(|c| c["name"] == "rekey")
            .unwrap_or_else(|| panic!("{name}: a rekey container"));
        let sc = &rekey["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert!(
            rekey["resources"]["requests"].is_object(),
            "{name}: resources"
        );
        let admin_port = container_port(rekey, "admin");
        for probe in ["readinessProbe", "livenessProbe"] {
            let get = &rekey[probe]["httpGet"];
            assert_eq!(get["port"], "admin", "{name}: {probe} on the admin port");
        }
        assert_eq!(
            rekey["readinessProbe"]["httpGet"]["path"], "/healthz",
            "{name}"
        );
        assert_eq!(ann["prometheus.io/port"], admin_port.to_string(), "{name}");

        // The ConfigMap it mounts (the whole volume: a subPath mount never sees updates).
        let mount = rekey["volumeMounts"].as_array().unwrap()[0].clone();
        assert!(mount.get("subPath").is_none(), "{name}: no subPath");
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let cm_name = &volume["configMap"]["name"];
        let cm = configs
            .iter()
            .find(|c| &c["metadata"]["name"] == cm_name)
            .unwrap_or_else(|| panic!("{name}: ConfigMap {cm_name}"));
        let toml = cm["data"]["rekey.toml"].as_str().unwrap();
        let args: Vec<&str> = rekey["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "-c",
                &format!("{}/rekey.toml", mount["mountPath"].as_str().unwrap())
            ],
            "{name}"
        );

        // The config is valid, admin listens where the kubelet and Prometheus reach it (the
        // pod IP, not loopback), on the port the probes and annotations name.
        let scratch = scratch_dir("k8s-config");
        let path = scratch.join("rekey.toml");
        std::fs::write(&path, toml).unwrap();
        let out = run(Command::new(env!("CARGO_BIN_EXE_rekey"))
            .arg("-c")
            .arg(&path)
            .arg("--check"));
        assert!(
            out.status.success(),
            "{name}: rekey --check of its ConfigMap"
        );
        let _ = std::fs::remove_dir_all(&scratch);
        assert_eq!(
            config_addr(toml, "admin"),
            format!("0.0.0.0:{admin_port}"),
            "{name}"
        );
        let listen = config_addr(toml, "listen");
        let redis_port = container_port(rekey, "redis");
        if spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] != "rekey")
        {
            // Sidecar: only the app in the same pod reaches rekey, on 127.0.0.1.
            sidecar_seen = true;
            assert_eq!(listen, format!("127.0.0.1:{redis_port}"), "{name}");
            assert_eq!(rekey["restartPolicy"], "Always", "{name}: a native sidecar");
            let app = spec["containers"].as_array().unwrap()[0].clone();
            let env = serde_json::to_string(&app["env"]).unwrap();
            assert!(
                env.contains(&format!("127.0.0.1:{redis_port}")),
                "{name}: {env}"
            );
        } else {
            assert_eq!(listen, format!("0.0.0.0:{redis_port}"), "{name}");
        }
    }
    assert!(sidecar_seen, "the sidecar example");
}

/// The unit with `ExecStart`/`ExecReload` pointing at the binary just built (`systemd-analyze
/// verify` requires the executables to exist) and its config at `config`.
fn unit_for_test(unit: &str, config: &Path) -> String {
    let bin = env!("CARGO_BIN_EXE_rekey");
    unit.replace("/usr/local/bin/rekey", bin)
        .replace("/etc/rekey/rekey.toml", config.to_str().unwrap())
}

fn verify(unit: &Path) -> Output {
    run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit))
}

#[test]
fn systemd_unit_verifies() {
    let text = std::fs::read_to_string(repo().join("config/deploy/rekey.service")).unwrap();
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "DynamicUser=yes",
        "AmbientCapabilities=",
        "CapabilityBoundingSet=",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "rekey.service has {line}"
        );
    }
    let scratch = scratch_dir("systemd");
    let config = repo().join("config/rekey.toml");
    let unit = scratch.join("rekey.service");
    std::fs::write(&unit, unit_for_test(&text, &config)).unwrap();
    let out = verify(&unit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify");
    assert!(
        !stderr.contains("rekey.service"),
        "no warning about the unit: {stderr}"
    );

    // The checker does catch mistakes: a misspelt directive is reported.
    let broken = scratch.join("broken").join("rekey.service");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(
        &broken,
        unit_for_test(&text, &config).replace("NoNewPrivileges=", "NoNewPrivilege="),
    )
    .unwrap();
    let out = verify(&broken);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NoNewPrivilege"),
        "a misspelt directive is reported"
    );

    // The command lines the unit runs are rekey's: its ExecStart with --check accepts the
    // config.
    let exec = unit_for_test(&text, &config)
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_string))
        .unwrap();
    let words: Vec<&str> = exec.split_whitespace().collect();
    let out = run(Command::new(words[0]).args(&words[1..]).arg("--check"));
    assert!(
        out.status.success(),
        "ExecStart's command line with --check"
    );

    // The hardening, scored by systemd itself: the exposure it prints goes from 0.0 (safest)
    // to 10.0; `--threshold` takes it times ten. At most 2.0 (the unit scores 1.2 "OK" on
    // systemd 252), where this systemd can score a unit file offline (250 and later).
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.contains("unrecognized option") {
        assert!(out.status.success(), "exposure at most 2.0");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
